"""Plain numpy metrics: zero-shot accuracy, top-k, confusions, reliability, retrieval recall."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .calibration import expected_calibration_error
from .probabilities import cosine

TOP_K = 5
RECALL_KS = (1, 5, 10)
ECE_BINS = 15  # as calibration.expected_calibration_error


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


def ranked(scores: np.ndarray) -> np.ndarray:
    """Class indices of each row, best first (ties: the earlier class first)."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")


def top_k_accuracy(order: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the first k of ``order`` (from :func:`ranked`)."""
    return float((order[:, :k] == np.asarray(truth)[:, None]).any(axis=1).mean())


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth), np.asarray(predicted)), 1)
    return matrix


def reliability_bins(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """The top-1 reliability curve, in the bins :func:`expected_calibration_error` uses: per bin its edges,
    image count, mean confidence and accuracy (None when empty)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(mask.sum()),
                     "confidence": float(confidence[mask].mean()) if mask.any() else None,
                     "accuracy": float(correct[mask].mean()) if mask.any() else None})
    return rows


def classification_metrics(probabilities: np.ndarray, truth: Sequence[int], names: Sequence[str]) -> dict:
    """Top-1, top-5 (None with 5 classes or fewer), mean per-class accuracy, ECE, per-class figures,
    the confusion matrix and the most frequent confusions."""
    truth = np.asarray(truth)
    order = ranked(probabilities)
    predicted = order[:, 0]
    count = len(names)
    matrix = confusion_matrix(truth, predicted, count)
    support, hits, made = matrix.sum(axis=1), np.diag(matrix), matrix.sum(axis=0)
    per_class = [{"name": names[c], "images": int(support[c]),
                  "accuracy": float(hits[c] / support[c]) if support[c] else None,
                  "precision": float(hits[c] / made[c]) if made[c] else None,
                  "predicted": int(made[c])} for c in range(count)]
    off = [(int(matrix[i, j]), i, j) for i in range(count) for j in range(count) if i != j and matrix[i, j]]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    confused = [{"true": names[i], "predicted": names[j], "count": n, "share": float(n / support[i])}
                for n, i, j in off[:10]]
    present = support > 0
    return {
        "top1": float((predicted == truth).mean()),
        "top5": top_k_accuracy(order, truth, TOP_K) if count > TOP_K else None,
        "mean_per_class_accuracy": float((hits[present] / support[present]).mean()),
        "ece": expected_calibration_error(probabilities, truth, ECE_BINS),
        "per_class": per_class,
        "confusion": matrix.tolist(),
        "most_confused": confused,
        "reliability": reliability_bins(probabilities, truth),
    }


def best_relevant_ranks(queries: np.ndarray, items: np.ndarray, relevant: Sequence[Sequence[int]],
                        chunk: int = 1024) -> np.ndarray:
    """0-based rank of each query's best-scoring relevant item: how many items score strictly higher."""
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = cosine(queries[start:start + chunk], items)
        for row, q in enumerate(range(start, min(start + chunk, len(queries)))):
            best = sims[row, list(relevant[q])].max()
            ranks[q] = int((sims[row] > best).sum())
    return ranks


def recall_summary(ranks: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict:
    summary = {f"recall@{k}": float((ranks < k).mean()) for k in ks}
    summary["median_rank"] = float(np.median(ranks + 1))
    return summary


def retrieval_metrics(image_vectors: np.ndarray, image_of_pair: Sequence[int], text_vectors: np.ndarray,
                      text_of_pair: Sequence[int], ks: Sequence[int] = RECALL_KS) -> dict:
    """Image→text and text→image recall@k over unique images and unique captions: an image's relevant
    texts are every caption paired with it, a caption's relevant images every image paired with it."""
    texts_of = [set() for _ in range(len(image_vectors))]
    images_of = [set() for _ in range(len(text_vectors))]
    for i, t in zip(image_of_pair, text_of_pair):
        texts_of[i].add(t)
        images_of[t].add(i)
    return {"image_to_text": recall_summary(best_relevant_ranks(image_vectors, text_vectors, texts_of), ks),
            "text_to_image": recall_summary(best_relevant_ranks(text_vectors, image_vectors, images_of), ks)}
