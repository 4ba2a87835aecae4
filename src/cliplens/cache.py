"""Where cliplens keeps derived data, and content hashes that key it to the files it came from."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where cliplens keeps derived data (reference embeddings, ONNX exports); ``CLIPLENS_CACHE_DIR`` overrides it."""
    env = os.environ.get("CLIPLENS_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cliplens"))


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, remembered per (path, size, mtime) so a large checkpoint is read once."""
    stat = path.stat()
    memo = cache_dir() / "hashes" / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32] + ".json")
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        saved = json.loads(memo.read_text())
        if saved.get("stamp") == stamp:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.stem}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
        tmp.replace(memo)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt")


def model_content_hash(folder: str | os.PathLike) -> str:
    """A hash of everything in a model folder that shapes its outputs (config, weights, tokenizer, preprocessor)."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = sorted({p for pattern in MODEL_FILE_PATTERNS for p in folder.glob(pattern)
                    if p.is_file() and not p.name.startswith("cliplens_")})
    for path in files:
        h.update(f"{path.name}\0{file_sha256(path)}\0".encode())
    return h.hexdigest()[:32]
