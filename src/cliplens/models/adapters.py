"""LoRA adapters (``cliplens train --lora``): a folder holding only the adapter, applied to its base model.

An adapter folder has ``adapter_config.json`` and ``adapter_model.safetensors`` (peft's format, which
transformers loads directly when peft is installed) beside the tokenizer, the preprocessor config and
any calibration, but no ``config.json``. cliplens merges it into its base once and keeps the merged
checkpoint in its cache, so every runtime (ONNX export included) runs it as a plain model; the
``cliplens merge`` command writes the same merged checkpoint where the user asks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..errors import ModelLoadError
from ..files import cache_dir

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin")
#: Files of the adapter folder that describe the fine-tuned model, not the adapter: copied beside merged weights.
CARRIED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
           "spiece.model", "vocab.txt", "sentencepiece.bpe.model", "preprocessor_config.json")
#: cliplens' own files, which may change after the merge (a calibration refitted): kept in step on each load.
NOTES = ("cliplens_calibration.json", "cliplens_banks.txt", "cliplens_train.json")


def is_adapter(folder: Path) -> bool:
    """Whether a folder holds a LoRA adapter rather than a whole model."""
    return (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").exists()


def adapter_base(folder: Path) -> str:
    """The base model an adapter folder was trained on (a hub id or a folder), from its adapter_config.json."""
    path = folder / ADAPTER_CONFIG
    try:
        base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{path} is damaged ({type(exc).__name__}); copy the adapter again",
                             value=str(folder), parameter="model") from None
    if not isinstance(base, str) or not base:
        raise ModelLoadError(f"{path} names no base model (base_model_name_or_path)", value=str(folder),
                             parameter="model")
    return base


def _fingerprint(adapter_dir: Path, base_dir: Path) -> str:
    digest = hashlib.sha256(str(base_dir.resolve()).encode())
    for name in sorted(p.name for p in adapter_dir.iterdir() if p.is_file()):
        if name in ADAPTER_FILES or name in CARRIED:
            digest.update(name.encode())
            digest.update(hashlib.sha256((adapter_dir / name).read_bytes()).digest())
    for weights in sorted(base_dir.glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def merge_adapter(adapter_dir: str | Path, base_dir: str | Path, out: str | Path) -> Path:
    """Apply the adapter to its base and write the result as a plain Hugging Face checkpoint in ``out``."""
    import torch
    from transformers import AutoModel

    try:
        from peft import PeftModel
    except ImportError:
        raise ModelLoadError("is a LoRA adapter, and applying it needs peft: pip install 'cliplens[train]'",
                             value=str(adapter_dir), parameter="model") from None
    adapter_dir, out = Path(adapter_dir), Path(out)
    base = AutoModel.from_pretrained(base_dir, dtype=torch.float32)
    try:
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    except Exception as exc:  # noqa: BLE001 - a mismatched or damaged adapter raises many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"cannot apply this adapter to {base_dir} ({type(exc).__name__}: {first})",
                             value=str(adapter_dir), parameter="model") from None
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    for name in CARRIED:
        if (adapter_dir / name).is_file():
            shutil.copyfile(adapter_dir / name, out / name)
    _sync_notes(adapter_dir, out)
    return out


def _sync_notes(adapter_dir: Path, merged: Path) -> None:
    """Make the merged checkpoint's cliplens files (calibration, banks) those of the adapter folder."""
    for name in NOTES:
        source, target = adapter_dir / name, merged / name
        if source.is_file():
            data = source.read_bytes()
            if not target.is_file() or target.read_bytes() != data:
                tmp = target.with_name(f"{name}.tmp{os.getpid()}")
                tmp.write_bytes(data)
                os.replace(tmp, target)
        elif target.exists():
            target.unlink(missing_ok=True)


def merged_checkpoint(adapter_dir: Path, base_dir: Path) -> Path:
    """The adapter merged into its base, from cliplens' cache (merged there the first time)."""
    target = cache_dir() / "merged" / _fingerprint(adapter_dir, base_dir)
    if (target / "config.json").exists():
        _sync_notes(adapter_dir, target)
        return target
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    merge_adapter(adapter_dir, base_dir, staging)
    try:
        staging.rename(target)
    except OSError:  # another process merged it first
        shutil.rmtree(staging, ignore_errors=True)
    return target
