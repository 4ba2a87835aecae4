"""CLIP-guided synthesis on the demo model: what it dreams for a caption it classifies as that caption,
edits from a photo move toward the prompt, a seed fixes the image, and the command's outputs and errors."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import cliplens
from cliplens.inputs.demo_data import DEMO_LABELS, generate
from cliplens.dream import Dream, dream, torch_encoder
from cliplens.dream.params import (Augment, FourierParam, LayerColour, PixelParam, draw_views, parse_size,
                                   perturb_views, pil_to_tensor, render_views, resample_matrix)
from cliplens.errors import ImageLoadError, UsageError
from cliplens.models import Encoder

HEADLINE_PROMPT, HEADLINE_LABEL = "a purple triangle", "purple triangle"


@pytest.fixture(scope="module")
def shapes(demo_model):
    """A classifier over the demo vocabulary: every colour × shape label ("a photo of a red circle.")."""
    return cliplens.Classifier(DEMO_LABELS, demo_model)


def _probability(classifier, image, label: str) -> float:
    return {s.label: s.probability for s in classifier.classify(image).labels}[label]


def _blue_square() -> Image.Image:
    return next(s.image for s in generate(200, seed=5) if s.scene.label == "blue square" and s.scene.count == 1)


@pytest.mark.slow
def test_from_noise_the_model_sees_the_prompt_in_what_it_dreamed(demo_model, shapes):
    started = time.perf_counter()
    result = dream(HEADLINE_PROMPT, demo_model, seed=0, guidance="plain", size="64x64")
    elapsed = time.perf_counter() - started
    probability = _probability(shapes, result.image, HEADLINE_LABEL)
    print(f"\n{HEADLINE_PROMPT!r}, {result.steps} steps, seed 0: {elapsed:.1f} s; P({HEADLINE_LABEL}) among "
          f"the {len(DEMO_LABELS)} demo labels {probability:.3f}; similarity of the image "
          f"{result.start_similarity:.3f} → "
          f"{result.similarity:.3f}; curve {result.similarities[0]:.3f} → {result.similarities[-1]:.3f}")
    assert probability >= 0.9
    assert shapes.classify(result.image).top.label == HEADLINE_LABEL
    assert result.image.size == (64, 64) and result.size == (64, 64)
    assert len(result.similarities) == result.steps
    assert result.similarity > result.start_similarity + 0.2
    assert np.mean(result.similarities[-20:]) > np.mean(result.similarities[:20]) + 0.2


def _hues(image: Image.Image, ground: float = 0.98) -> np.ndarray:
    """The hues (degrees) of an image's clearly coloured pixels that are not the ground."""
    hsv = np.asarray(image.convert("HSV"), np.float64)
    coloured = (hsv[..., 1] > 0.35 * 255) & (hsv[..., 2] > 0.25 * 255)
    return hsv[coloured][:, 0] * 360 / 255


def test_by_default_a_dream_is_256_pixels_of_one_coloured_object_on_a_plain_ground(demo_model, shapes):
    result = dream("a blue square", demo_model, seed=3, steps=60)
    assert result.size == (256, 256) and result.image.size == (256, 256)
    assert result.settings["guidance"] == "object" and result.settings["cutouts"] == 16
    assert result.settings["shading"] == 0.0 and result.settings["desaturate"] == 0.6
    pixels = np.asarray(result.image, np.float64)
    ground = np.all(np.abs(pixels - 0.98 * 255) < 12, axis=-1)
    assert 0.3 < ground.mean() < 0.98  # what is not drawn shows the ground, not a texture
    # what is drawn is one colour: its hues spread over a few degrees, where robust's free colours spread widely
    free = dream("a blue square", demo_model, seed=3, steps=60, guidance="robust")
    assert np.percentile(_hues(result.image), 95) - np.percentile(_hues(result.image), 5) < 20
    assert np.percentile(_hues(free.image), 95) - np.percentile(_hues(free.image), 5) > 40
    plain = dream("a blue square", demo_model, seed=3, steps=60, guidance="plain", size="256x256")
    assert np.all(np.abs(np.asarray(plain.image, np.float64) - 0.98 * 255) < 12, axis=-1).mean() < 0.05


def test_init_edits_the_photo_toward_the_prompt(demo_model, shapes):
    start = _blue_square()
    assert shapes.classify(start).top.label == "blue square"
    result = dream("a red circle", demo_model, init=start, steps=100, seed=0)
    before, after = _probability(shapes, start, "red circle"), _probability(shapes, result.image, "red circle")
    print(f"\n--init blue square, 'a red circle', 100 steps: P(red circle) {before:.4f} → {after:.3f}, "
          f"P(blue square) {_probability(shapes, start, 'blue square'):.3f} → "
          f"{_probability(shapes, result.image, 'blue square'):.3f}")
    assert after > before + 0.3
    assert _probability(shapes, result.image, "blue square") < _probability(shapes, start, "blue square")
    assert result.similarity > result.start_similarity and result.size == start.size
    # the keep-close term: an edit, not a new picture (8-bit mean absolute difference)
    diff = np.abs(np.asarray(result.image, np.float64) - np.asarray(start, np.float64)).mean()
    print(f"mean absolute change {diff:.1f}/255")
    assert diff < 16


@pytest.mark.parametrize("param", ["fft", "pixel"])
def test_step_zero_reproduces_the_start_photo(param):
    cls = FourierParam if param == "fft" else PixelParam
    for photo in (_blue_square(), _blue_square().crop((3, 5, 40, 34))):  # odd sides too: 37 × 29
        pixels = pil_to_tensor(photo)
        rebuilt = cls.from_image(pixels).rgb().detach()
        assert rebuilt.shape == pixels.shape
        # pixels are clipped to [0.01, 0.99] before the sigmoid is inverted; inside that, the round trip is exact
        assert torch.allclose(rebuilt, pixels.clamp(0.01, 0.99), atol=1e-4)


def test_same_seed_same_image_and_another_seed_another(demo_model):
    first = dream("a blue star", demo_model, steps=15, seed=3)
    second = dream("a blue star", demo_model, steps=15, seed=3)
    other = dream("a blue star", demo_model, steps=15, seed=4)
    assert np.array_equal(np.asarray(first.image), np.asarray(second.image))
    assert first.similarities == second.similarities
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


def test_pixel_parameterisation_negatives_size_and_frames(demo_model):
    frames = []
    steps = []
    result = dream("a green triangle", demo_model, param="pixel", steps=20, size="96x80", seed=1,
                   negative=["a green square"], cutouts=4, frame_every=8,
                   on_step=lambda done, total, sim: steps.append((done, total)),
                   on_frame=lambda step, image: frames.append((step, image.size)))
    assert isinstance(result, Dream) and result.param == "pixel" and result.image.size == (96, 80)
    assert steps == [(i, 20) for i in range(1, 21)]
    assert frames == [(0, (96, 80)), (8, (96, 80)), (16, (96, 80)), (20, (96, 80))]
    assert result.negative == ("a green square",) and result.settings["cutouts"] == 4
    data = result.to_dict()
    assert data["size"] == [96, 80] and len(data["similarities"]) == 20 and "image" not in data
    json.dumps(data)
    assert np.mean(result.similarities[-5:]) > np.mean(result.similarities[:5])


def test_a_layer_colour_is_one_hue_shaded_and_its_views_can_be_washed_out():
    generator = torch.Generator().manual_seed(0)
    layer = LayerColour.random(24, 20, generator, shading=1.0, sd=1.0)
    with torch.no_grad():
        layer.base.copy_(torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1))
    logits = torch.logit(layer.rgb().detach().double())
    # one shade for all channels: the channels' differences (the hue's logits) are the same at every pixel
    assert torch.allclose(logits[0, 0] - logits[0, 1], torch.full((24, 20), 3.0, dtype=torch.float64), atol=1e-4)
    assert logits[0, 0].max() - logits[0, 0].min() > 0.1  # but light and shade vary
    assert (logits[0, 0] - 2.0).abs().max() <= 1.0 + 1e-4  # within ± shading
    assert {p.data_ptr() for p in layer.leaves} == {layer.base.data_ptr(), layer.shade.param.data_ptr()}
    flat = LayerColour.random(24, 20, torch.Generator().manual_seed(0), shading=0.0, sd=1.0)
    assert flat.leaves == [flat.base] and flat.rgb().shape == (1, 3, 24, 20)
    assert torch.equal(flat.rgb(), flat.base.sigmoid().expand(1, 3, 24, 20))  # shading 0: one flat colour
    views = torch.rand((6, 3, 8, 8), generator=generator)
    washed = perturb_views(views, 0.0, torch.Generator().manual_seed(1), desaturate=1.0)
    grey = views.mean(dim=1, keepdim=True)
    # each view lies between itself and its own grey, by one amount for all its pixels
    change, spread = (views - washed).flatten(1), (views - grey).flatten(1)
    amount = (change * spread).sum(1) / (spread * spread).sum(1)
    assert torch.allclose(change, amount[:, None] * spread, atol=1e-5)
    assert torch.all((amount >= 0) & (amount <= 1)) and amount.std() > 0.05
    assert torch.equal(perturb_views(views, 0.0, torch.Generator().manual_seed(1)), views)


def test_views_are_crops_resized_and_flipped():
    # a crop of the whole row, not shrunk: the identity; mirrored: the reversed identity
    assert np.allclose(resample_matrix(0, 8, 8, 8), np.eye(8))
    assert np.allclose(resample_matrix(0, 8, 8, 8, flip=True), np.eye(8)[::-1])
    # halving: a filter twice as wide, centred between each pair of source pixels; rows sum to one
    half = resample_matrix(0, 8, 4, 8)
    assert np.allclose(half.sum(axis=1), 1) and np.allclose((half @ np.arange(8))[1:3], [2.5, 4.5])
    generator = torch.Generator().manual_seed(0)
    rows, cols = draw_views(40, 60, (16, 16), Augment(cutouts=5), generator)
    assert rows.shape == (5, 16, 40) and cols.shape == (5, 16, 60)
    image = torch.rand((1, 3, 40, 60), generator=generator)
    views = render_views(image, rows, cols, 0.0, generator)
    assert views.shape == (5, 3, 16, 16) and views.min() >= 0 and views.max() <= 1
    assert parse_size("64x48") == (64, 48) and parse_size("128") == (128, 128) and parse_size("32×32") == (32, 32)


def test_bad_input_is_named(demo_model, tmp_path):
    with pytest.raises(UsageError, match="prompt is empty"):
        dream("  ", demo_model)
    with pytest.raises(UsageError, match="^size abc: give WIDTHxHEIGHT"):
        dream("a red circle", demo_model, size="abc")
    with pytest.raises(UsageError, match="^size 0x10: each side must be") as info:
        dream("a red circle", demo_model, size="0x10")
    assert info.value.parameter == "size"
    with pytest.raises(UsageError, match="^param vqgan: choose from"):
        dream("a red circle", demo_model, param="vqgan")
    with pytest.raises(UsageError, match="^negative '': text 1 is empty"):
        dream("a red circle", demo_model, negative=[""])
    with pytest.raises(UsageError, match="^against ' ': text 2 is empty") as info:
        dream("a red circle", demo_model, against=["a red star", " "])
    assert info.value.parameter == "against"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match="bad.png"):
        dream("a red circle", demo_model, init=bad)

    class OnnxLike(Encoder):  # ONNX Runtime gives no gradients
        info = replace(demo_model.info, backend="onnx")
        preprocessor = demo_model.preprocessor

        def encode_pixel_batch(self, pixels):
            raise AssertionError

        def encode_text_batch(self, texts):
            raise AssertionError

    with pytest.raises(UsageError, match="torch backend"):
        torch_encoder(OnnxLike())


def _invoke(*args):
    from cliplens.cli import app

    return CliRunner().invoke(app, ["dream", *args])


def test_command_writes_the_image_json_frames_and_gif(tmp_path):
    out, gif, frames = tmp_path / "out" / "circle.png", tmp_path / "run.gif", tmp_path / "frames"
    result = _invoke("a red circle", "--model", "demo", "--out", str(out), "--steps", "12")
    assert result.exit_code == 2 and "the folder" in result.stderr and "does not exist" in result.stderr
    out.parent.mkdir()
    result = _invoke("a red circle", "--model", "demo", "--device", "cpu", "--out", str(out), "--steps", "12",
                     "--seed", "2", "--gif", str(gif), "--frames", str(frames), "--frame-every", "5",
                     "--label", "red circle", "--label", "blue square", "--negative", "a red square",
                     "--against", "a blue circle", "--against", "a red circle", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["out"] == str(out) and data["prompt"] == "a red circle" and data["negative"] == ["a red square"]
    assert data["against"] == ["a blue circle"] and data["settings"]["against_weight"] > 0  # the prompt is no rival
    assert data["steps"] == 12 and data["seed"] == 2 and data["seconds"] > 0 and data["model"] == "demo"
    assert len(data["similarities"]) == 12 and isinstance(data["similarity"], float)
    assert [s["label"] for s in data["classification"]["labels"]] in (["red circle", "blue square"],
                                                                     ["blue square", "red circle"])
    assert Image.open(out).size == (256, 256)  # 256 px whatever the model's input (64 px here)
    assert data["settings"]["guidance"] == "object"
    assert sorted(p.name for p in frames.iterdir()) == ["00000.png", "00005.png", "00010.png", "00012.png"]
    with Image.open(gif) as animation:
        assert animation.n_frames == 4
    # the same run without --json: one line on stdout, and --init with its start classification
    start = tmp_path / "start.png"
    _blue_square().save(start)
    result = _invoke("a red circle", "--model", "demo", "--out", str(tmp_path / "edit.png"), "--steps", "5",
                     "--init", str(start), "--label", "red circle", "--label", "blue square")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "similarity to 'a red circle'" in lines[0] and lines[1].strip().startswith("start: blue square")
    assert Image.open(tmp_path / "edit.png").size == (64, 64)


@pytest.mark.parametrize("args, message", [
    (["  "], "the prompt is empty"),
    (["a red circle", "--size", "abc"], "--size abc: give WIDTHxHEIGHT"),
    (["a red circle", "--size", "0x10"], "--size 0x10: each side must be"),
    (["a red circle", "--guidance", "fancy"], "--guidance fancy: choose from plain, robust"),
    (["a red circle", "--init", "missing.png"], "missing.png"),
    (["a red circle", "--param", "vqgan"], "--param vqgan: choose from fft, pixel"),
    (["a red circle", "--gif", "run.mp4"], "--gif run.mp4: give a .gif"),
    (["a red circle", "--precision", "int8"], "--precision int8"),
    (["a red circle", "--backend", "onnx"], "--backend onnx: dream follows gradients"),
    (["a red circle", "--against", ""], "--against '': text 1 is empty"),
    (["a red circle", "--against-file", "missing.txt"], "--against-file"),
])
def test_command_bad_input_is_one_line(tmp_path, args, message):
    result = _invoke(*args, "--model", "demo", "--out", str(tmp_path / "x.png"))
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x.png").exists()
