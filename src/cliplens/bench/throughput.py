"""Images/s and texts/s from files to embeddings: cliplens as a user runs it against the loop a user
would write with transformers, on the same model and files, in alternating rounds of one run."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_BATCH = 32


@dataclass
class Throughput:
    """Items per second of both paths, and what ran."""

    model: str
    items: int
    cliplens_per_s: float
    reference_per_s: float
    backend: str
    precision: str
    rounds: int

    @property
    def ratio(self) -> float:
        return self.cliplens_per_s / self.reference_per_s


class ReferenceLoop:
    """What a transformers user writes: Pillow, ``CLIPProcessor``, ``CLIPModel``, batch 32, float32."""

    def __init__(self, model_dir: str | Path):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.torch = torch
        self.processor = CLIPProcessor.from_pretrained(model_dir)
        self.model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()

    def embed_images(self, paths: Sequence[Path]) -> np.ndarray:
        from PIL import Image

        out = []
        for start in range(0, len(paths), REFERENCE_BATCH):
            images = [Image.open(p).convert("RGB") for p in paths[start : start + REFERENCE_BATCH]]
            inputs = self.processor(images=images, return_tensors="pt")
            with self.torch.no_grad():
                features = self.model.get_image_features(**inputs).pooler_output
            out.append((features / features.norm(dim=-1, keepdim=True)).numpy())
        return np.concatenate(out)

    def classify(self, paths: Sequence[Path], prompts: Sequence[str]) -> np.ndarray:
        """Zero-shot probabilities (N, labels) as the transformers examples compute them."""
        from PIL import Image

        out = []
        for start in range(0, len(paths), REFERENCE_BATCH):
            images = [Image.open(p).convert("RGB") for p in paths[start : start + REFERENCE_BATCH]]
            with warnings.catch_warnings():  # the processor's note on max_length is about its defaults, not us
                warnings.simplefilter("ignore")
                inputs = self.processor(text=list(prompts), images=images, padding=True, return_tensors="pt")
            with self.torch.no_grad():
                out.append(self.model(**inputs).logits_per_image.softmax(dim=-1).numpy())
        return np.concatenate(out).astype(np.float64)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), REFERENCE_BATCH):
            inputs = self.processor(text=list(texts[start : start + REFERENCE_BATCH]), padding=True, return_tensors="pt")
            with self.torch.no_grad():
                features = self.model.get_text_features(**inputs).pooler_output
            out.append((features / features.norm(dim=-1, keepdim=True)).numpy())
        return np.concatenate(out)


def _alternate(rounds: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Seconds per path, summed over ``rounds`` alternating runs (so drifts in machine speed hit both)."""
    seconds = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name] += time.perf_counter() - start
    return seconds


def image_throughput(paths: Sequence[Path], model: str, model_dir: Path, *, rounds: int = 2, encoder=None,
                     backend: str | None = None, precision: str | None = None) -> Throughput:
    """End-to-end images/s of ``cliplens.embed_images`` (``encoder``, else the model as ``auto`` loads it for
    rankings) and of :class:`ReferenceLoop`."""
    from ..models import load_model
    from ..vectors.batches import embed_images

    encoder = encoder or load_model(str(model_dir), backend=backend, precision=precision, purpose="rankings",
                                    cache=False)
    reference = ReferenceLoop(model_dir)
    warm = list(paths[:4])
    embed_images(warm, encoder), reference.embed_images(warm)  # first-call costs are not throughput
    seconds = _alternate(rounds, {"cliplens": lambda: embed_images(paths, encoder, skip_errors=False),
                                  "reference": lambda: reference.embed_images(paths)})
    total = rounds * len(paths)
    return Throughput(model, len(paths), total / seconds["cliplens"], total / seconds["reference"],
                      encoder.info.backend, encoder.info.precision, rounds)


@dataclass
class ClassifyThroughput(Throughput):
    """Images/s of zero-shot classification, and how far cliplens' probabilities are from the reference's."""

    labels: int = 0
    max_probability_delta: float = 0.0


def classify_throughput(paths: Sequence[Path], labels: Sequence[str], model: str, model_dir: Path, *,
                        rounds: int = 2, encoder=None, template: str = "a photo of a {}.") -> ClassifyThroughput:
    """Images/s of ``cliplens.Classifier.classify_many`` and of the CLIPModel loop a transformers user writes
    (prompts and images through CLIPProcessor, ``logits_per_image.softmax``, batch 32), and the largest
    difference between their probabilities on the same images."""
    from ..classify import Classifier
    from ..models import load_model

    encoder = encoder or load_model(str(model_dir), cache=False)
    classifier = Classifier(labels, encoder, template=template)  # labels embedded once, as every cliplens run does
    reference = ReferenceLoop(model_dir)
    prompts = [template.replace("{}", label) for label in labels]
    results: dict[str, np.ndarray] = {}

    def ours() -> None:
        rows = [{s.label: s.probability for s in c.labels} for c in classifier.classify_many(paths)]
        results["cliplens"] = np.array([[row[label] for label in classifier.labels] for row in rows])

    def theirs() -> None:
        results["reference"] = reference.classify(paths, prompts)

    list(classifier.classify_many(paths[:4])), reference.classify(paths[:4], prompts)  # first-call costs
    seconds = _alternate(rounds, {"cliplens": ours, "reference": theirs})
    total = rounds * len(paths)
    delta = float(np.abs(results["cliplens"] - results["reference"]).max())
    return ClassifyThroughput(model, len(paths), total / seconds["cliplens"], total / seconds["reference"],
                              encoder.info.backend, encoder.info.precision, rounds, len(labels), delta)


def text_throughput(texts: Sequence[str], model: str, model_dir: Path, *, rounds: int = 2,
                    backend: str | None = None, precision: str | None = None) -> Throughput:
    """Texts/s of ``cliplens.embed_texts`` and of :class:`ReferenceLoop` on the same texts."""
    from ..models import load_model
    from ..vectors.batches import embed_texts

    encoder = load_model(str(model_dir), backend=backend, precision=precision, cache=False)
    reference = ReferenceLoop(model_dir)
    embed_texts(texts[:8], encoder), reference.embed_texts(texts[:8])
    seconds = _alternate(rounds, {"cliplens": lambda: embed_texts(texts, encoder),
                                  "reference": lambda: reference.embed_texts(texts)})
    total = rounds * len(texts)
    return Throughput(model, len(texts), total / seconds["cliplens"], total / seconds["reference"],
                      encoder.info.backend, encoder.info.precision, rounds)
