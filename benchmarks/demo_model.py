"""Evaluate a model on freshly generated demo-domain images: zero-shot top-1 and retrieval recall.

    python benchmarks/demo_model.py [--model demo] [-n 500] [--seed 20261122] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import cliplens
from cliplens.demo_data import DEMO_LABELS, generate
from cliplens.metrics import image_to_text_recall, text_to_image_recall, zero_shot_top_k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    model = cliplens.load_model(args.model, device="cpu")
    samples = list(generate(args.n, seed=args.seed))
    start = time.perf_counter()
    images = model.encode_images([s.image for s in samples])
    image_seconds = time.perf_counter() - start
    truth = [DEMO_LABELS.index(s.scene.label) for s in samples]
    labels = model.encode_texts([f"a photo of a {label}." for label in DEMO_LABELS])
    captions = [s.scene.full_caption for s in samples]
    texts = model.encode_texts(captions)
    report = {
        "model": args.model, "images": args.n, "seed": args.seed,
        "zero_shot_top1": zero_shot_top_k(images, labels, truth, 1),
        "zero_shot_top5": zero_shot_top_k(images, labels, truth, 5),
        **{f"text_to_image_recall@{k}": text_to_image_recall(texts, images, captions, k) for k in (1, 5, 10)},
        **{f"text_to_image_recall@{k}_strict": text_to_image_recall(texts, images, captions, k, strict=True)
           for k in (1, 5)},
        **{f"image_to_text_recall@{k}": image_to_text_recall(images, texts, captions, k) for k in (1, 5)},
        "images_per_second": args.n / image_seconds,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")


if __name__ == "__main__":
    main()
