"""Evaluate a model on freshly generated demo-domain images: zero-shot top-1 and retrieval recall.

    python benchmarks/demo_model.py [--model demo] [-n 500] [--seed 20261122] [--json]

Uses only the public API (``import cliplens``): the images come from ``cliplens.write_demo_data``.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import cliplens


def demo_rows(folder: Path, n: int, seed: int) -> list[dict]:
    """``n`` demo images written under ``folder``: each row of their pairs.csv, with its image loaded."""
    pairs = cliplens.write_demo_data(folder, n, seed=seed)
    with open(pairs, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["image"] = cliplens.load_image(pairs.parent / row["path"])
    return rows


def zero_shot_top_k(images: np.ndarray, labels: np.ndarray, truth: list[int], k: int) -> float:
    """Share of images whose true label is among the k labels most similar to them."""
    top = np.argsort(-(images @ labels.T), axis=1)[:, :k]
    return float(np.mean([t in row for t, row in zip(truth, top)]))


def recall(queries: np.ndarray, targets: np.ndarray, captions: list[str], k: int, *, strict: bool = False) -> float:
    """Recall@k with query i's relevant targets those whose caption equals caption i (``strict``: target i)."""
    top = np.argsort(-(queries @ targets.T), axis=1)[:, :k]
    if strict:
        return float(np.mean([i in row for i, row in enumerate(top)]))
    return float(np.mean([any(captions[j] == captions[i] for j in row) for i, row in enumerate(top)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = cliplens.load_model(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        rows = demo_rows(Path(tmp), args.n, args.seed)
    start = time.perf_counter()
    images = model.encode_images([row["image"] for row in rows])
    image_seconds = time.perf_counter() - start
    truth = [cliplens.DEMO_LABELS.index(row["label"]) for row in rows]
    labels = model.encode_texts([f"a photo of a {label}." for label in cliplens.DEMO_LABELS])
    captions = [row["full_caption"] for row in rows]
    texts = model.encode_texts(captions)
    report = {
        "model": args.model, "images": args.n, "seed": args.seed,
        "zero_shot_top1": zero_shot_top_k(images, labels, truth, 1),
        "zero_shot_top5": zero_shot_top_k(images, labels, truth, 5),
        **{f"text_to_image_recall@{k}": recall(texts, images, captions, k) for k in (1, 5, 10)},
        **{f"text_to_image_recall@{k}_strict": recall(texts, images, captions, k, strict=True) for k in (1, 5)},
        **{f"image_to_text_recall@{k}": recall(images, texts, captions, k) for k in (1, 5)},
        "images_per_second": args.n / image_seconds,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")


if __name__ == "__main__":
    main()
