"""Turning cosine similarities into probabilities the way each model family was trained to."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large magnitudes."""
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def cosine(images: np.ndarray, texts: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix (N_images, N_texts) of L2-normalised vectors."""
    return np.asarray(images, np.float32) @ np.asarray(texts, np.float32).T


def label_probabilities(similarity: np.ndarray, encoder, temperature: float = 1.0) -> np.ndarray:
    """Probabilities over labels the way the model was trained: a softmax of the scaled cosines for CLIP
    (divided by a calibrated ``temperature``), an independent sigmoid with the bias per label for SigLIP.

    ``encoder`` is the :class:`~cliplens.Encoder` (or its ``info``) whose ``logit_scale``, ``logit_bias``
    and ``score_kind`` say how its cosines are read.
    """
    logits = np.asarray(similarity, np.float64) * encoder.logit_scale
    if encoder.score_kind == "sigmoid":
        return sigmoid(logits + (encoder.logit_bias or 0.0))
    return softmax(logits / temperature)
