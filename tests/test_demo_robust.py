"""demo-robust, the demo model adversarially fine-tuned (``make demo-robust-model``): it keeps its answers under
small changes that turn the demo model's, and ``cliplens dream`` with it draws one object of the named colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cliplens
from cliplens.bench.pixel_judge import judge
from cliplens.inputs.demo_data import DEMO_LABELS, generate
from cliplens.train.adversarial import l2_attack


@pytest.fixture(scope="module")
def robust_model():
    return cliplens.load_model("demo-robust", device="cpu", backend="torch", precision="fp32", cache=False)


def _single_shapes(n: int):
    samples = [s for s in generate(400, seed=11) if s.scene.count == 1 and not s.scene.word][:n]
    images = torch.stack([torch.from_numpy(np.asarray(s.image, np.float32) / 255).permute(2, 0, 1) for s in samples])
    return images, torch.tensor([DEMO_LABELS.index(s.scene.label) for s in samples])


def _top1(encoder, images, targets, radius: float) -> float:
    texts = torch.from_numpy(encoder.encode_texts([f"a photo of a {label}." for label in DEMO_LABELS]))
    normalise = encoder.preprocessor.normalize_tensor

    def logits(x):
        return 100 * F.normalize(encoder.image_features(normalise(x)), dim=-1) @ texts.T

    moved = l2_attack(lambda x: F.cross_entropy(logits(x), targets), images, radius, steps=5)
    with torch.no_grad():
        return float((logits(moved).argmax(1) == targets).float().mean())


def test_demo_robust_keeps_its_answers_under_changes_that_turn_the_demo_models(demo_model, robust_model):
    """The figures of the README's table on demo-robust."""
    images, targets = _single_shapes(40)
    radii = (0.0, 0.25, 0.5, 1.0)
    figures = {name: dict(zip(radii, (_top1(model, images, targets, radius) for radius in radii)))
               for name, model in (("demo", demo_model), ("demo-robust", robust_model))}
    print(f"\ntop-1 of 40 single shapes among the 30 labels, clean and under L2 attacks of radius 0.25, 0.5, 1.0: "
          f"{figures}")
    assert figures["demo"][0.5] < 0.4  # the plain model is turned by changes of about 1/255 per pixel
    assert figures["demo-robust"][0.5] > figures["demo"][0.5] + 0.3
    assert figures["demo-robust"][0.0] > 0.75


@pytest.mark.slow
def test_dreaming_with_demo_robust_draws_one_object_of_the_named_colour(robust_model):
    result = cliplens.dream("a red circle", robust_model, seed=0, steps=200)
    verdict = judge(result.image, "red", "circle")
    print(f"\n'a red circle' with demo-robust, 200 steps: {verdict}")
    assert verdict.colour_dominates and verdict.one_object


def test_dreamed_against_its_rivals_the_prompt_is_told_apart_from_them(robust_model):
    """``against`` (the prompt's cross-entropy among its rivals) widens the image's margin over them: its cosine
    with the prompt less its largest cosine with a rival, against the same run for the prompt alone."""
    shapes = ("circle", "square", "triangle", "star", "cross")
    margins = {}
    for colour, shape in (("purple", "star"), ("purple", "cross"), ("red", "star"), ("red", "cross")):
        prompt = f"a {colour} {shape}"
        rivals = [f"a {colour} {other}" for other in shapes if other != shape]
        texts = robust_model.encode_texts([prompt, *rivals])
        for against in ((), rivals):
            result = cliplens.dream(prompt, robust_model, seed=0, steps=60, size="64x64", against=against)
            cosines = robust_model.encode_images([result.image])[0] @ texts.T
            margins[prompt, bool(against)] = float(cosines[0] - cosines[1:].max())
        assert result.against == tuple(rivals) and result.settings["against_weight"] > 0
    print(f"\nmargin over the rivals, alone and against them: {margins}")
    assert all(margins[prompt, True] > margins[prompt, False] for prompt, _ in margins)
