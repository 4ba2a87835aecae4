"""The synthetic demo domain: one-shape scenes, two-shape scenes and their captions."""

from __future__ import annotations

import numpy as np

from cliplens.inputs.demo_data import COLOURS, SHAPES, ShapeScene, generate


def test_single_shape_seeds_are_unchanged_by_the_mixed_option():
    """Held-out sets and the bundled model's training data were drawn before two-shape scenes existed."""
    first = next(generate(1, seed=20261122)).scene
    assert first == ShapeScene("cross", "purple", 1, "large", "gray")
    assert [s.scene for s in generate(20, seed=5)] == [s.scene for s in generate(20, seed=5, mixed=0.0)]


def test_mixed_scenes_hold_two_different_shapes_in_their_colours():
    samples = list(generate(300, seed=3, mixed=0.5))
    mixed = [s for s in samples if s.scene.shape2]
    assert 100 < len(mixed) < 200
    for sample in mixed:
        scene = sample.scene
        assert scene.shape != scene.shape2 and scene.count == 1 and len(scene.labels) == 2
        assert scene.label == f"{scene.colour} {scene.shape} and {scene.colour2} {scene.shape2}"
        assert scene.shape in sample.caption or scene.shape2 in sample.caption
        pixels = np.asarray(sample.image).reshape(-1, 3).astype(int)
        for colour in {scene.colour, scene.colour2}:  # both shapes are drawn, each in its own colour
            assert (np.abs(pixels - COLOURS[colour]).max(axis=1) < 40).sum() > 5
    both = np.mean([" and " in s.caption for s in mixed])
    assert 0.35 < both < 0.65  # the rest mention one of the two shapes, as real captions often do
    colourless = [s for s in samples if not any(c in s.caption for c in COLOURS)]
    assert 20 < len(colourless) < 110  # a fifth of captions name shapes only
    assert all(any(shape in s.caption for shape in SHAPES) for s in colourless)


def test_caption_forms():
    scene = ShapeScene("circle", "red", 1, "large", "white", "star", "blue")
    assert scene.full_caption == "a large red circle and a large blue star on a white background"
    assert scene.caption(with_colour=False, with_size=False, swap=True) == "a star and a circle on a white background"
    assert ShapeScene("circle", "orange", 2, "small", "black").caption(with_colour=False) == \
        "two small circles on a black background"
