"""Plain numpy metrics over embeddings: zero-shot accuracy and retrieval recall."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def zero_shot_top_k(image_vectors: np.ndarray, label_vectors: np.ndarray, truth: Sequence[int], k: int = 1) -> float:
    """Share of images whose true label index is among the k most similar label embeddings."""
    sims = image_vectors @ label_vectors.T
    top = np.argsort(-sims, axis=1)[:, :k]
    truth = np.asarray(truth)
    return float(np.mean([truth[i] in top[i] for i in range(len(truth))]))


def text_to_image_recall(text_vectors: np.ndarray, image_vectors: np.ndarray, captions: Sequence[str],
                         k: int = 5, *, strict: bool = False) -> float:
    """Text→image recall@k; query i's relevant images are those whose caption equals caption i.

    With unique captions this is the usual recall@k (the query's own image); with repeated captions
    (synthetic data) any image the caption describes exactly counts, unless ``strict`` asks for the
    query's own image.
    """
    sims = text_vectors @ image_vectors.T
    top = np.argsort(-sims, axis=1)[:, :k]
    captions = list(captions)
    if strict:
        return float(np.mean([i in top[i] for i in range(len(captions))]))
    return float(np.mean([any(captions[j] == captions[i] for j in top[i]) for i in range(len(captions))]))


def image_to_text_recall(image_vectors: np.ndarray, text_vectors: np.ndarray, captions: Sequence[str],
                         k: int = 5, *, strict: bool = False) -> float:
    """Image→text recall@k with the same caption-equality rule."""
    return text_to_image_recall(image_vectors, text_vectors, captions, k, strict=strict)
