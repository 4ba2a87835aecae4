"""What ``cliplens dream`` costs and reaches: seconds per image, and how surely the model then sees the prompt."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from ..models import Encoder


@dataclass(frozen=True)
class DreamRun:
    """One generation from noise: its prompt and label, time, and the label's probability among all labels."""

    label: str
    prompt: str
    seconds: float
    steps: int
    probability: float  # of ``label`` among the labels, for the generated image
    top: str  # the label the model gives the generated image
    start_similarity: float
    similarity: float
    curve_start: float
    curve_end: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DreamBench:
    runs: list[DreamRun]
    labels: int
    threshold: float

    @property
    def passed(self) -> int:
        return sum(run.probability >= self.threshold and run.top == run.label for run in self.runs)

    def to_dict(self) -> dict:
        seconds = [r.seconds for r in self.runs]
        probabilities = [r.probability for r in self.runs]
        return {"labels": self.labels, "prompts": len(self.runs), "threshold": self.threshold,
                "passed": self.passed, "median_probability": statistics.median(probabilities),
                "min_probability": min(probabilities), "median_seconds": statistics.median(seconds),
                "max_seconds": max(seconds), "runs": [r.to_dict() for r in self.runs]}


def bench_dream(encoder: Encoder, labels: Sequence[str], *, prompts: Sequence[str] | None = None,
                template: str | None = None, steps: int | None = None, seed: int = 0, threshold: float = 0.9,
                on_progress: Callable[[int, int], None] | None = None, **options) -> DreamBench:
    """Dream ``template.format(label)`` (default "a {}" or "an {}") for each of ``prompts`` (labels; default all
    ``labels``) from noise, timing each generation (the model is already loaded), then classify the image
    among ``labels``."""
    from ..classify import Classifier
    from ..dream import DEFAULT_STEPS, dream

    classifier = Classifier(labels, encoder)
    chosen = list(prompts) if prompts else list(labels)
    runs = []
    for i, label in enumerate(chosen):
        prompt = template.format(label) if template else f"{'an' if label[:1] in 'aeiou' else 'a'} {label}"
        started = time.perf_counter()
        result = dream(prompt, encoder, steps=steps or DEFAULT_STEPS, seed=seed, **options)
        seconds = time.perf_counter() - started
        classification = classifier.classify(result.image)
        probability = next((s.probability for s in classification.labels if s.label == label), float("nan"))
        runs.append(DreamRun(label, prompt, seconds, result.steps, probability, classification.top.label,
                             result.start_similarity, result.similarity, result.similarities[0],
                             result.similarities[-1]))
        if on_progress is not None:
            on_progress(i + 1, len(chosen))
    return DreamBench(runs, len(labels), threshold)
