"""The one way cliplens keys derived data to a model: by the content of its files.

:func:`checkpoint_key` names a checkpoint folder by what is in it (config, weights, tokenizer,
preprocessor), so two copies of a model share an ONNX export and an index built from one copy is
accepted by the other. :func:`output_key` names what an :class:`~cliplens.models.Encoder` makes:
the checkpoint's key with the runtime and precision that run it. Every cache of vectors (reference
captions, label banks, image embeddings) is keyed by :func:`output_key`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..files import file_sha256

MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt")


def checkpoint_key(folder: str | os.PathLike) -> str:
    """A hash of everything in a model folder that shapes its outputs (config, weights, tokenizer, preprocessor)."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = sorted({p for pattern in MODEL_FILE_PATTERNS for p in folder.glob(pattern)
                    if p.is_file() and not p.name.startswith("cliplens_")})
    for path in files:
        h.update(os.fsencode(path.name) + f"\0{file_sha256(path)}\0".encode())
    return h.hexdigest()[:32]


def output_key(encoder) -> str:
    """Names an encoder's outputs: its checkpoint's content, runtime, precision and embedding size."""
    info = encoder.info
    folder = Path(info.path)
    content = checkpoint_key(folder) if folder.is_dir() else info.name
    text = f"{content}\0{info.backend}\0{info.precision}\0{info.embed_dim}"
    if info.text_precision != info.precision:  # ONNX int8 embeds texts in fp32
        text += f"\0texts {info.text_precision}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]
