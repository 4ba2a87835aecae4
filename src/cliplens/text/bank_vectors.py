"""Text embeddings of label banks, computed once per (model, bank) and kept on disk.

For each label a bank holds its prompt-ensemble vector (what is scored against images) and the
vectors of the label written as text ("the word {}", "a sign that says {}"), which the typographic
guard compares with. A folder under ``<cache>/banks/<model key>/<bank hash>/`` keeps them as
``.npy`` files (memory-mapped on load), so a second run, in any process, encodes no text.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..files import atomic_folder, cache_dir
from ..models import Encoder, TextTruncatedWarning, l2_normalize
from ..models.keys import output_key
from .banks import LabelBank

#: How a label reads when it is written in the image rather than shown.
TYPOGRAPHIC_PROMPTS = ("the word {}", "a sign that says {}")
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)
_BATCH = 1024


def written_word(label: str) -> str:
    """What would be written for a label: "a golden retriever" → "golden retriever"."""
    return _ARTICLE.sub("", label.strip())


@dataclass(frozen=True)
class BankVectors:
    """One bank embedded for one model: the labels it can read, their vectors and written-text vectors."""

    bank: LabelBank
    labels: tuple[str, ...]  # the bank's labels the model can read, in bank order
    vectors: np.ndarray  # (K, D) normalised prompt-ensemble vectors
    written: np.ndarray  # (K, W, D) normalised vectors of each typographic prompt
    encoded: int  # texts encoded to make these (0 when they came from the cache)
    unreadable: tuple[str, ...] = ()  # labels with words the model does not know, left out


def _cache_folder(encoder: Encoder, bank: LabelBank, typographic: Sequence[str]) -> Path:
    typo = hashlib.sha256("\x1f".join(typographic).encode()).hexdigest()[:8]
    return cache_dir() / "banks" / output_key(encoder) / f"{bank.name}-{bank.content_hash}-{typo}"


def _load(folder: Path, bank: LabelBank, dim: int) -> BankVectors | None:
    try:
        meta = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        written = np.load(folder / "written.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None  # absent or damaged: recomputed
    labels = tuple(meta["labels"])
    if vectors.shape != (len(labels), dim) or written.shape[0] != len(labels):
        return None
    return BankVectors(bank, labels, vectors, written, 0, tuple(meta.get("unreadable", ())))


def _save(folder: Path, result: BankVectors) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(folder) as tmp:
            np.save(tmp / "vectors.npy", np.ascontiguousarray(result.vectors, np.float32))
            np.save(tmp / "written.npy", np.ascontiguousarray(result.written, np.float32))
            (tmp / "labels.json").write_text(json.dumps({"bank": result.bank.name, "labels": list(result.labels),
                                                         "unreadable": list(result.unreadable)}), encoding="utf-8")
    except OSError:
        pass  # a read-only or full cache only costs time next run


def _encode(encoder: Encoder, texts: list[str], done: int, total: int,
            on_progress: Callable[[int, int], None] | None) -> np.ndarray:
    parts = []
    for start in range(0, len(texts), _BATCH):
        parts.append(encoder.encode_texts(texts[start:start + _BATCH]))
        if on_progress is not None:
            on_progress(done + start + len(parts[-1]), total)
    return np.concatenate(parts) if parts else np.zeros((0, encoder.embed_dim), np.float32)


def bank_vectors(encoder: Encoder, bank: LabelBank, *, typographic: Sequence[str] = TYPOGRAPHIC_PROMPTS,
                 on_progress: Callable[[int, int], None] | None = None) -> BankVectors:
    """The bank's vectors for this model, from the disk cache or encoded (and then cached)."""
    folder = _cache_folder(encoder, bank, typographic)
    cached = _load(folder, bank, encoder.embed_dim)
    if cached is not None:
        return cached
    readable = encoder.readable(list(bank.labels))
    labels = [label for label, ok in zip(bank.labels, readable) if ok]
    unreadable = tuple(label for label, ok in zip(bank.labels, readable) if not ok)
    prompts = bank.scored_prompts
    texts = [p.replace("{}", label) for label in labels for p in prompts]
    written_texts = [t.replace("{}", written_word(label)) for label in labels for t in typographic]
    total = len(texts) + len(written_texts)
    dim = encoder.embed_dim
    with warnings.catch_warnings():  # a long label cut to the context is not worth a warning per bank
        warnings.simplefilter("ignore", TextTruncatedWarning)
        vectors = _encode(encoder, texts, 0, total, on_progress).reshape(len(labels), len(prompts), dim)
        written = _encode(encoder, written_texts, len(texts), total, on_progress)
    result = BankVectors(bank, tuple(labels), l2_normalize(vectors.mean(axis=1)),
                         written.reshape(len(labels), len(typographic), dim), total, unreadable)
    _save(folder, result)
    return result
