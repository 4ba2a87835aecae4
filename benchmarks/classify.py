"""Zero-shot classification figures of a model on the demo domain (fresh images it never saw).

    python benchmarks/classify.py [--model demo] [--n 1000]

Prints: top-1 per prompt style; the largest probability difference from transformers'
zero-shot-image-classification pipeline; how often "none of these" is flagged for label sets with and
without the true label (with the model's calibration and with none); conformal coverage and set sizes;
multi-label results on two-shape images; and batch throughput from PNG files. Uses only the public API
(``import cliplens``): the images come from ``cliplens.write_demo_data``.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import cliplens

SEED = 20261122
DEMO_LABELS = list(cliplens.DEMO_LABELS)
SHAPES = list(dict.fromkeys(label.split()[-1] for label in DEMO_LABELS))
CALIBRATION_FILE = "cliplens_calibration.json"  # the calibration a model ships beside its weights


@dataclass(frozen=True)
class Sample:
    """One generated image (its PNG file, loaded) and what it shows."""

    path: Path
    image: object
    label: str  # "red circle", or "red circle and blue star" in a two-shape scene
    labels: tuple[str, ...]  # every colour–shape label true of it
    colour: str
    shape: str
    shapes: frozenset[str]


def demo_samples(folder: Path, n: int, seed: int, mixed: float = 0.0) -> list[Sample]:
    """``n`` demo images written into ``folder`` by ``cliplens.write_demo_data``, with what each shows."""
    pairs = cliplens.write_demo_data(folder, n, seed=seed, mixed=mixed)
    samples = []
    with open(pairs, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            labels = (f"{row['colour']} {row['shape']}",) + ((f"{row['colour2']} {row['shape2']}",)
                                                            if row["shape2"] else ())
            samples.append(Sample(pairs.parent / row["path"], cliplens.load_image(pairs.parent / row["path"]),
                                  row["label"], labels, row["colour"], row["shape"],
                                  frozenset(filter(None, (row["shape"], row["shape2"])))))
    return samples


def label_sets(samples, rng, unrelated_only):
    """(labels with the truth, labels without it) per image, 2–6 labels each."""
    cases = []
    for sample in samples:
        k = rng.randint(2, 6)
        others = [label for label in DEMO_LABELS if label != sample.label]
        pool = ([label for label in others if sample.colour not in label and sample.shape not in label]
                if unrelated_only else others)
        cases.append(([sample.label, *rng.sample(others, k - 1)], rng.sample(pool, k)))
    return cases


def flag_rates(encoder, vectors, cases, calibration):
    flagged_in, flagged_out = [], []
    for vector, (with_truth, without) in zip(vectors, cases):
        for labels, flags in ((with_truth, flagged_in), (without, flagged_out)):
            result = cliplens.Classifier(labels, encoder, calibration=calibration).score_vectors(vector[None], [""])[0]
            flags.append(result.is_none_of_these)
    return np.mean(flagged_in), np.mean(flagged_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    encoder = cliplens.load_model(args.model)
    work = tempfile.TemporaryDirectory()
    samples = demo_samples(Path(work.name) / "held-out", args.n, SEED)
    vectors = encoder.encode_images([s.image for s in samples])
    truth = [s.label for s in samples]
    names = [""] * len(samples)

    print(f"model {args.model}, {args.n} held-out images (seed {SEED}), 30 colour × shape labels")
    for name, kw in [("'a photo of a {}.'", {}), ("80 ImageNet templates", {"templates": "imagenet"}),
                     ("labels verbatim", {"templates": "none"})]:
        results = cliplens.Classifier(DEMO_LABELS, encoder, **kw).score_vectors(vectors, names)
        print(f"  top-1, {name:<24} {np.mean([r.top.label == t for r, t in zip(results, truth)]):.3f}")

    from transformers import pipeline

    pipe = pipeline("zero-shot-image-classification", model=encoder.info.path, device="cpu")
    rng = random.Random(1)
    worst = 0.0
    for sample in samples[:50]:
        labels = rng.sample(DEMO_LABELS, 5)
        theirs = {d["label"]: d["score"] for d in pipe(sample.image, candidate_labels=labels,
                                                       hypothesis_template="a photo of a {}.")}
        ours = cliplens.classify(sample.image, labels, encoder)
        worst = max(worst, max(abs(s.probability - theirs[s.label]) for s in ours.labels))
    print(f"  largest |p - transformers pipeline| over 50 images × 5 labels: {worst:.2e}")

    shipped_file = Path(encoder.info.path) / CALIBRATION_FILE
    shipped = cliplens.Calibration.load(shipped_file) if shipped_file.is_file() else None
    subset, subset_vectors = samples[:500], vectors[:500]
    for what, unrelated in (("labels sharing neither colour nor shape", True), ("any wrong labels", False)):
        cases = label_sets(subset, random.Random(2), unrelated)
        for calibration, tag in ((None, "shipped calibration"), (False, "no calibration")):
            if calibration is None and shipped is None:
                continue
            inside, outside = flag_rates(encoder, subset_vectors, cases, calibration)
            print(f"  none of these ({tag}), 2–6 {what}: flagged {outside:.3f} without the true label, "
                  f"{inside:.3f} with it")

    if shipped is not None:
        for coverage in (0.8, 0.9, 0.95):
            results = cliplens.Classifier(DEMO_LABELS, encoder, calibration=shipped, coverage=coverage
                                          ).score_vectors(vectors, names)
            covered = np.mean([t in r.prediction_set for r, t in zip(results, truth)])
            sizes = [len(r.prediction_set) for r in results]
            print(f"  conformal {coverage:.0%}: coverage {covered:.3f}, mean set size {np.mean(sizes):.2f}, "
                  f"empty {np.mean([s == 0 for s in sizes]):.3f}")

    mixed = demo_samples(Path(work.name) / "mixed", min(500, args.n), SEED + 2, mixed=1.0)
    mixed_vectors = encoder.encode_images([s.image for s in mixed])
    for what, labels, truths in (("5 shape labels", SHAPES, [set(m.shapes) for m in mixed]),
                                 ("30 colour-shape labels", DEMO_LABELS, [set(m.labels) for m in mixed])):
        results = cliplens.Classifier(labels, encoder, multi_label=True).score_vectors(mixed_vectors, [""] * len(mixed))
        present = [{s.label for s in r.labels if s.probability >= 0.5} for r in results]
        both = np.mean([t <= p for t, p in zip(truths, present)])
        exact = np.mean([t == p for t, p in zip(truths, present)])
        print(f"  multi-label on {len(mixed)} two-shape images, {what}: both ≥ 50% in {both:.3f}, exactly them in "
              f"{exact:.3f}, {np.mean([len(p) for p in present]):.2f} labels ≥ 50% per image")

    paths = []
    for i, sample in enumerate(samples):
        paths.append(Path(work.name) / f"{i}.png")
        sample.image.resize((256, 256)).save(paths[-1])
    classifier = cliplens.Classifier(DEMO_LABELS, encoder)
    start = time.perf_counter()
    count = sum(1 for _ in classifier.classify_many(paths))
    elapsed = time.perf_counter() - start
    print(f"  classify_many: {count} 256-px PNGs in {elapsed:.2f} s = {count / elapsed:.0f} images/s")
    work.cleanup()


if __name__ == "__main__":
    main()
