"""Negative labels (NegLabel, Jiang et al. 2024): captions from a large lexicon that lie far from a label set.

An image of something the labels do not cover tends to match some caption of a broad lexicon better
than any of the labels; an image the labels describe does not. The lexicon is the shipped general
banks (objects, places, mediums, styles, people, time and weather, colours) and the 1,000 ImageNet
classes; for a label set, the captions least like any of its labels (and sharing none of their words)
are its negatives. Their embeddings are cached per model, as the reference vocabulary's are.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Sequence

import numpy as np

from ..inputs.wordlists import imagenet_classes
from ..models import Encoder
from .banks import GENERAL_BANKS, builtin_bank
from .prompts import DEFAULT_TEMPLATE, LabelWarning, label_embeddings
from .reference import ReferenceVocabulary, shared_vocabulary

NEGATIVE_SHARE = 0.3  # of the lexicon: the captions farthest from the labels


@lru_cache(maxsize=1)
def lexicon() -> tuple[str, ...]:
    """Every label of the general banks and the ImageNet classes, once each."""
    labels: list[str] = []
    for name in GENERAL_BANKS:
        labels += builtin_bank(name).labels
    return tuple(dict.fromkeys([*labels, *imagenet_classes()]))


def mine_negatives(encoder: Encoder, labels: Sequence[str], share: float = NEGATIVE_SHARE) -> list[str]:
    """The lexicon captions this model reads that are least like any of ``labels`` (and share no word with one)."""
    vocabulary = shared_vocabulary(lexicon())
    names, vectors = vocabulary.for_model(encoder)
    with warnings.catch_warnings():  # labels the model cannot read were warned about where they were given
        warnings.simplefilter("ignore", LabelWarning)
        label_vectors = label_embeddings(encoder, list(labels), [DEFAULT_TEMPLATE])
    closeness = (vectors @ label_vectors.T).max(axis=1)
    related = np.zeros(len(names), dtype=bool)
    for label in labels:
        related[vocabulary.related(encoder, label)] = True
    candidates = np.flatnonzero(~related)
    count = max(1, int(round(share * len(candidates)))) if len(candidates) else 0
    farthest = candidates[np.argsort(closeness[candidates], kind="stable")[:count]]
    return [names[i] for i in sorted(farthest)]


def negative_vocabulary(negatives: Sequence[str]) -> ReferenceVocabulary:
    """The negatives as a vocabulary (embedded once per model, cached on disk)."""
    return shared_vocabulary(tuple(negatives))


def best_negative(encoder: Encoder, negatives: Sequence[str], image_vectors: np.ndarray) -> np.ndarray | None:
    """Each image's best cosine with the negative captions (None when there are none)."""
    if not negatives:
        return None
    _, vectors = negative_vocabulary(negatives).for_model(encoder)
    return (np.asarray(image_vectors, np.float32) @ vectors.T).max(axis=1)
