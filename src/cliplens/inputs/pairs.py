"""Reading image–caption pairs files (CSV or JSONL with ``path`` and ``caption``)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError


@dataclass(frozen=True)
class Pair:
    """One training or evaluation example: an image path (resolved) and its caption."""

    path: Path
    caption: str
    references: tuple[str, ...] = ()  # reference captions, when the file has a ``references`` column


REFERENCE_SEPARATOR = "|"


def _references(value) -> tuple[str, ...]:
    """A JSON list, or one CSV cell with captions separated by ``|``."""
    items = value if isinstance(value, list) else str(value or "").split(REFERENCE_SEPARATOR)
    return tuple(str(item).strip() for item in items if str(item).strip())


def read_pairs(path: str | Path, path_column: str = "path", caption_column: str = "caption") -> list[Pair]:
    """Read a CSV (with a header) or JSONL pairs file; relative image paths resolve against the file's folder.

    An optional ``references`` column holds reference captions (a JSON list, or ``|``-separated in CSV).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such pairs file")
    base = path.parent
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {path_column, caption_column} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}:1: header lacks column(s) {', '.join(sorted(missing))}; "
                                f"expected at least {path_column!r} and {caption_column!r}")
            rows = [(lineno, row) for lineno, row in enumerate(reader, 2)]
    pairs = []
    for lineno, row in rows:
        image, caption = row.get(path_column), row.get(caption_column)
        if not image or caption is None or not str(caption).strip():
            raise DataError(f"{path}:{lineno}: needs a non-empty {path_column!r} and {caption_column!r}")
        image_path = Path(image)
        pairs.append(Pair(image_path if image_path.is_absolute() else base / image_path, str(caption).strip(),
                          _references(row.get("references"))))
    if not pairs:
        raise DataError(f"{path}: holds no pairs")
    return pairs
