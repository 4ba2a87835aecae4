"""Text files: the word lists shipped in ``cliplens/data`` and the user's own labels files."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import DataError, UsageError


def read_data_lines(name: str) -> list[str]:
    """Non-comment lines of a text file shipped in ``cliplens/data``."""
    text = resources.files("cliplens").joinpath("data", name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


@lru_cache(maxsize=4)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet class names as cleaned for CLIP zero-shot evaluation."""
    return tuple(read_data_lines("imagenet-classes.txt"))


def read_text_file(path: str | Path, parameter: str) -> str:
    """A UTF-8 text file's contents; ``parameter`` names the argument that gave the file, for the error."""
    path = Path(path)
    if not path.exists():
        raise UsageError("no such file", value=str(path), parameter=parameter)
    if path.is_dir():
        raise UsageError("is a folder, not a text file", value=str(path), parameter=parameter)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"cannot read it ({exc.strerror or exc})", value=str(path), parameter=parameter) from None


def read_labels_file(path: str | Path, parameter: str = "labels_file") -> list[str]:
    """Labels from a text file, one per line (``#`` comments and blank lines skipped); errors name
    ``parameter``."""
    text = read_text_file(path, parameter)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
