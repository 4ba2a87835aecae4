"""Where a model name leads: aliases, local folders, the bundled demo model and the Hugging Face cache."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelLoadError, ModelNotFoundError
from .adapters import adapter_base, is_adapter, merged_checkpoint

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DEMO_DIR = Path(__file__).parent / "demo"
#: The demo model adversarially fine-tuned (``cliplens train --adversarial``): its gradients draw shapes.
DEMO_ROBUST_DIR = Path(__file__).parent / "demo-robust"

#: Short names for well-known checkpoints; ``demo`` is the tiny model shipped inside the package, ``demo-robust``
#: its adversarially fine-tuned sibling (for ``cliplens dream``).
ALIASES: dict[str, str] = {
    "demo": str(DEMO_DIR),
    "demo-robust": str(DEMO_ROBUST_DIR),
    "clip-b32": "openai/clip-vit-base-patch32",
    "clip-b16": "openai/clip-vit-base-patch16",
    "clip-l14": "openai/clip-vit-large-patch14",
    "clip-l14-336": "openai/clip-vit-large-patch14-336",
    "laion-b32": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "laion-h14": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    "siglip-b16": "google/siglip-base-patch16-224",
    "siglip-so400m": "google/siglip-so400m-patch14-384",
    "siglip2-b16": "google/siglip2-base-patch16-224",
    "siglip2-b16-naflex": "google/siglip2-base-patch16-naflex",
    # multilingual: SigLIP's, Chinese-CLIP (BERT over Chinese), AltCLIP (XLM-R), MetaCLIP 2 (worldwide)
    "siglip-b16-multilingual": "google/siglip-base-patch16-256-multilingual",
    "chinese-clip-b16": "OFA-Sys/chinese-clip-vit-base-patch16",
    "chinese-clip-l14": "OFA-Sys/chinese-clip-vit-large-patch14",
    "altclip": "BAAI/AltCLIP",
    "altclip-m9": "BAAI/AltCLIP-m9",
    "metaclip2-h14": "facebook/metaclip-2-worldwide-huge-quickgelu",
}

# Files a checkpoint needs; weights are chosen separately so that only one format is fetched.
_CONFIG_PATTERNS = ["*.json", "*.txt", "*.model", "spiece.model"]


def default_model() -> str:
    """``CLIPLENS_MODEL`` if set, else the default hub model."""
    return os.environ.get("CLIPLENS_MODEL") or DEFAULT_MODEL


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return path if (path / "config.json").exists() else None


def _weight_patterns(repo_id: str) -> list[str]:
    from huggingface_hub import HfApi

    files = [s.rfilename for s in (HfApi().model_info(repo_id).siblings or [])]
    if any(f.endswith(".safetensors") for f in files):
        return ["*.safetensors", "*.safetensors.index.json"]
    return ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


def download(repo_id: str) -> Path:
    """Fetch a hub checkpoint (config, tokenizer, processor and one weights format) into the HF cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if _offline():
        raise ModelNotFoundError(repo_id, "HF_HUB_OFFLINE is set and it is not in the local cache")
    try:
        patterns = _CONFIG_PATTERNS + _weight_patterns(repo_id)
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except RepositoryNotFoundError:
        raise ModelNotFoundError(repo_id, "no such model on the Hugging Face hub") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(repo_id, f"the hub cannot be reached ({reason[:160]})") from None
    except Exception as exc:  # noqa: BLE001 - requests/httpx connection errors vary by version
        raise ModelNotFoundError(repo_id, f"the hub cannot be reached ({type(exc).__name__})") from None


def read_model_config(folder: Path) -> dict:
    """A model folder's ``config.json``; a missing or damaged one is a :class:`ModelLoadError` naming the file."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError("not a model folder (no config.json)", value=str(folder), parameter="model") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc})", value=str(folder),
                             parameter="model") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is damaged: not valid JSON ({exc.msg}, line {exc.lineno}); download or copy "
                             "the model again", value=str(folder), parameter="model") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} is damaged: not a JSON object; download or copy the model again",
                             value=str(folder), parameter="model")
    return config


def resolve_model_dir(name: str | os.PathLike | None = None, *, allow_download: bool = True) -> Path:
    """The local folder holding a model: an alias, a folder, or a hub id (from the cache, else downloaded).

    A LoRA adapter folder leads to its base model with the adapter merged in (see :mod:`.adapters`)."""
    text = os.fspath(name) if name is not None else default_model()
    target = ALIASES.get(text, text)
    path = Path(target).expanduser()
    if path.is_dir():
        if is_adapter(path):
            return merged_checkpoint(path, resolve_model_dir(adapter_base(path), allow_download=allow_download))
        read_model_config(path)
        return path
    if path.exists():
        raise ModelLoadError("a model must be a folder in Hugging Face format, not a file", value=str(path), parameter="model")
    if target.startswith((".", "/", "~")) or target.count("/") > 1:
        raise ModelLoadError("no such model folder", value=str(text), parameter="model")
    cached = _cached_snapshot(target)
    if cached is not None:
        return cached
    if not allow_download:
        raise ModelNotFoundError(target, "it is not in the local cache")
    return download(target)


@dataclass(frozen=True)
class ModelEntry:
    """One line of ``cliplens models list``."""

    name: str
    target: str
    kind: str  # "alias", "cached"
    available: bool
    size_bytes: int | None = None


def list_models() -> list[ModelEntry]:
    """The aliases (and whether each is available offline) and every model in the Hugging Face cache."""
    entries = []
    for alias, target in ALIASES.items():
        available = Path(target).is_dir() or _cached_snapshot(target) is not None
        entries.append(ModelEntry(alias, "bundled" if alias in ("demo", "demo-robust") else target, "alias", available))
    try:
        from huggingface_hub import scan_cache_dir

        for repo in sorted(scan_cache_dir().repos, key=lambda r: r.repo_id):
            if repo.repo_type == "model":
                entries.append(ModelEntry(repo.repo_id, str(repo.repo_path), "cached", True, repo.size_on_disk))
    except Exception:  # noqa: BLE001 - no cache dir yet, or an unreadable one: nothing cached to list
        pass
    return entries
