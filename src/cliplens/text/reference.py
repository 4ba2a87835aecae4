"""A reference vocabulary: what a caption that really matches an image scores for this model.

Cosine similarities mean different things for different models and images, so a label's raw
similarity alone says little about whether it fits. Comparing it with the image's best match in a
broad vocabulary (the 1,000 ImageNet classes by default, plus a calibration's own classes) does:
a label that fits scores about as well as the best reference caption; when every label scores far
below it, the image shows something else ("none of these"), and the reference caption says what.
"""

from __future__ import annotations

import hashlib
import re
import warnings
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_save_npy, cache_dir
from ..inputs.wordlists import imagenet_classes
from ..models import Encoder, TextTruncatedWarning
from ..models.keys import output_key
from ..scores.calibration import default_calibration
from .prompts import DEFAULT_TEMPLATE, label_embeddings


def _cache_file(encoder: Encoder, texts: Sequence[str]) -> Path:
    """Where the vectors of ``texts`` made by this encoder are kept."""
    text = output_key(encoder) + "\0" + "\n".join(texts)
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return cache_dir() / "reference" / f"{digest}.npy"


class ReferenceVocabulary:
    """Reference labels, embedded once per model (and cached on disk, since large models embed slowly).

    Labels with words the model's tokenizer does not know (a word-level model such as ``demo`` reads
    "red fox" as "red <unk>") are left out for that model: they say nothing about what it sees
    (unless it can read none of them).
    """

    def __init__(self, labels: Sequence[str], template: str = DEFAULT_TEMPLATE):
        self.labels = list(dict.fromkeys(labels))
        self.template = template
        self._for_model: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Encoder -> (labels, vectors)
        self.encoded_texts = 0  # texts this vocabulary has had to encode (not found in the disk cache)
        self._postings: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Encoder -> {word: indices}
        self._sizes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Encoder -> words per caption

    def for_model(self, encoder: Encoder) -> tuple[list[str], np.ndarray]:
        """The reference labels this model can read and their normalised embeddings."""
        if encoder in self._for_model:
            return self._for_model[encoder]
        prompts = [self.template.replace("{}", label) for label in self.labels]
        keep = encoder.readable(prompts)
        if not any(keep):  # a tokenizer that reads none of them: better all than nothing
            keep = [True] * len(prompts)
        labels = [label for label, ok in zip(self.labels, keep) if ok]
        prompts = [prompt for prompt, ok in zip(prompts, keep) if ok]
        path = _cache_file(encoder, prompts)
        vectors = None
        if path.exists():
            try:
                vectors = np.load(path)
            except (OSError, ValueError):
                vectors = None  # a damaged cache file is recomputed
            if vectors is not None and vectors.shape != (len(prompts), encoder.embed_dim):
                vectors = None
        if vectors is None:
            with warnings.catch_warnings():  # a truncated reference caption is not the user's concern
                warnings.simplefilter("ignore", TextTruncatedWarning)
                vectors = label_embeddings(encoder, labels, [self.template])
            self.encoded_texts += len(labels)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_save_npy(path, vectors)
            except OSError:
                pass  # a read-only cache only costs time
        self._for_model[encoder] = (labels, vectors)
        return labels, vectors

    def _postings_for(self, encoder: Encoder) -> dict[str, np.ndarray]:
        """Which reference captions hold each word (and how many words each caption has), built once per model."""
        postings = self._postings.get(encoder)
        if postings is None:
            names, _ = self.for_model(encoder)
            lists: dict[str, list[int]] = {}
            for i, name in enumerate(names):
                for word in _words(name):
                    lists.setdefault(word, []).append(i)
            postings = self._postings[encoder] = {w: np.array(ids) for w, ids in lists.items()}
            self._sizes[encoder] = np.array([len(_words(name)) for name in names])
        return postings

    def containing(self, encoder: Encoder, label: str) -> np.ndarray:
        """Indices of the reference captions holding every word of ``label`` (articles aside).

        Such a caption ("red circle", "tabby cat") is a more specific form of the label ("a circle",
        "cat"), so it says nothing against that label and is left out when judging it.
        """
        postings = self._postings_for(encoder)
        words = _words(label)
        if not words:
            return np.zeros(0, dtype=int)
        found = None
        for word in words:
            ids = postings.get(word)
            if ids is None:
                return np.zeros(0, dtype=int)
            found = ids if found is None else np.intersect1d(found, ids, assume_unique=True)
        return found

    def within(self, encoder: Encoder, label: str) -> np.ndarray:
        """Indices of the reference captions whose every word is in ``label`` (articles aside).

        Such a caption ("orange", "circle") is a more general form of the label ("orange circle"): an
        image that looks most like an orange says nothing against "three orange circles" either.
        """
        postings = self._postings_for(encoder)
        sizes = self._sizes[encoder]
        hits = np.zeros(len(sizes), dtype=int)
        for word in _words(label):
            ids = postings.get(word)
            if ids is not None:
                hits[ids] += 1
        return np.flatnonzero((hits == sizes) & (sizes > 0))

    def related(self, encoder: Encoder, label: str) -> np.ndarray:
        """The reference captions that say nothing against ``label``: more specific (:meth:`containing`) or
        more general (:meth:`within`) forms of it."""
        return np.union1d(self.containing(encoder, label), self.within(encoder, label))

    def kept_for(self, encoder: Encoder, labels: Sequence[str]) -> np.ndarray:
        """Which reference captions judge each label (K, M): all but those :meth:`related` to it.

        Compute this once per label set; :meth:`best_for_labels` takes it for every batch.
        """
        names, _ = self.for_model(encoder)
        kept = np.ones((len(labels), len(names)), dtype=bool)
        for k, label in enumerate(labels):
            kept[k, self.related(encoder, label)] = False
        return kept

    def best_for_labels(self, encoder: Encoder, image_vectors: np.ndarray, kept: np.ndarray
                        ) -> tuple[np.ndarray, list[str]]:
        """Per image and label (N, K): the highest cosine over the reference captions ``kept`` for that label
        (from :meth:`kept_for`), and each image's best reference label overall."""
        names, vectors = self.for_model(encoder)
        sims = np.asarray(image_vectors, np.float32) @ vectors.T
        best = np.repeat(sims.max(axis=1)[:, None], len(kept), axis=1)
        for k in np.flatnonzero(~kept.all(axis=1)):
            best[:, k] = sims[:, kept[k]].max(axis=1) if kept[k].any() else -1.0
        return best, [names[i] for i in sims.argmax(axis=1)]


_ARTICLES = frozenset({"a", "an", "the"})


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text.lower())) - _ARTICLES


@lru_cache(maxsize=8)
def shared_vocabulary(labels: tuple[str, ...]) -> ReferenceVocabulary:
    """One vocabulary object per label list, so classifiers made one after another reuse its embeddings."""
    return ReferenceVocabulary(labels)


def reranking_vocabulary(encoder: Encoder, rerank: bool | None = None) -> np.ndarray | None:
    """The reference embeddings that ranking images against one text subtracts from, or None when off.

    Images differ in how well they match *any* caption; ranking many images for one text by raw cosine
    lets the ones that match everything fairly well ("hubs") crowd the top. Ranking by the text's
    cosine less the image's best reference cosine (the same L − R the none-of-these detector reads)
    asks instead how much better the text fits the image than its own best description does.

    ``rerank=None`` (auto) turns this on when the model ships a calibration, whose classes say what its
    images show (the demo model does); True uses that calibration's vocabulary or the ImageNet classes.
    """
    if rerank is False:
        return None
    calibration = default_calibration(encoder.info.path)
    if calibration is None and rerank is None:
        return None
    labels = tuple(calibration.reference if calibration else imagenet_classes())
    return shared_vocabulary(labels).for_model(encoder)[1]


def reference_best(image_vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each image's best cosine with the reference embeddings."""
    return (np.asarray(image_vectors, np.float32) @ reference.T).max(axis=1)
