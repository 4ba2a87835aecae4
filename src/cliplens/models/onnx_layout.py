"""What an ONNX export holds and where: the files :mod:`.export` writes and :mod:`.onnx` reads.

An export lives in ``<cache>/onnx/<checkpoint key>/``: the towers (``image.fp32.onnx``, ``text.fp32.onnx``,
``image.int8.onnx``), the tokenizer as a ``tokenizers`` file, the preprocessor config and
``export.json`` with what the runtime needs (family, scale, bias, context length). Reduced
precisions apply to the image tower only: texts always run in fp32.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelLoadError
from ..files import cache_dir
from .keys import checkpoint_key

EXPORT_FORMAT = "cliplens-onnx/1"
ONNX_PRECISIONS = ("fp32", "int8")
TOWERS = ("image", "text")


class ExportError(ModelLoadError):
    """A model cannot be exported to ONNX (or its export does not reproduce it)."""


def export_folder(model_dir: str | Path) -> Path:
    """Where the export of the model in ``model_dir`` lives (keyed by the folder's content)."""
    return cache_dir() / "onnx" / checkpoint_key(model_dir)


def tower_file(folder: Path, tower: str, precision: str) -> Path:
    """The ONNX file one tower runs at ``precision`` (the text tower always runs in fp32)."""
    return folder / f"{tower}.{'fp32' if tower == 'text' else precision}.onnx"


def has_export(folder: Path, precision: str) -> bool:
    """Whether both towers of ``precision`` and the metadata are in ``folder``."""
    return (folder / "export.json").exists() and all(tower_file(folder, t, precision).exists() for t in TOWERS)


def read_meta(folder: Path) -> dict:
    """The export's ``export.json``; raises :class:`ExportError` when it is damaged or of another format."""
    try:
        meta = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder}: damaged ONNX export ({exc}); delete the folder to export again") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{folder}: ONNX export in format {meta.get('format')!r}, expected {EXPORT_FORMAT}")
    return meta
