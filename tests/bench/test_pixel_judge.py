"""The pixel judge of dreams: it must read plain drawings of the demo's shapes right, and refuse what a
person would not call "a red circle" (a texture, two objects, another colour, a speck)."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from cliplens.bench.pixel_judge import judge, judge_rendered
from cliplens.inputs.demo_data import render_shape


def test_plain_drawings_are_read_right():
    result = judge_rendered(150, seed=1)
    assert result["recognisable"] == 1.0
    assert result["right_shape"] >= 0.9
    assert all(row.get(shape, 0) >= 0.75 * sum(row.values()) for shape, row in result["confusion"].items())


def test_one_large_red_circle_passes_and_what_a_person_would_not_call_one_fails():
    circle = render_shape("circle", "red", "white", random.Random(0), 256, 0.3)
    verdict = judge(circle, "red", "circle")
    assert verdict.recognisable and verdict.right_shape and verdict.dominant_colour == "red"
    assert not judge(circle, "blue", "circle").colour_dominates
    assert not judge(circle, "red", "square").right_shape

    rng = np.random.default_rng(0)
    texture = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    assert not judge(texture, "red", "circle").recognisable

    two = Image.new("RGB", (256, 256), (250, 250, 250))
    draw = ImageDraw.Draw(two)
    for cx in (64, 192):
        draw.ellipse((cx - 45, 83, cx + 45, 173), fill=(215, 40, 40))
    verdict = judge(two, "red", "circle")
    assert verdict.colour_dominates and not verdict.one_object  # two objects, each half of the red

    speck = Image.new("RGB", (256, 256), (250, 250, 250))
    ImageDraw.Draw(speck).ellipse((120, 120, 140, 140), fill=(215, 40, 40))
    assert not judge(speck, "red", "circle").recognisable  # a red speck covers too little to be the picture
