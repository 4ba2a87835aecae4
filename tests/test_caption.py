"""Captions from label banks on the demo model: right labels, honest silence, the typographic guard, caching."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import cliplens
from cliplens.caption.bank_fit import calibrate_bank, kept_quality
from cliplens.scores.calibration import fit_platt
from cliplens.text.banks import LabelBank, builtin_bank
from cliplens.caption.captioner import Captioner, typographic_suspects
from cliplens.inputs.demo_data import SHAPES, generate, random_scene, render_scene

HELD_OUT_SEED = 20261122
EXAMPLES = Path(cliplens.__file__).parent / "examples"


@pytest.fixture(scope="module")
def captioner(demo_model):
    return Captioner(demo_model)


@pytest.fixture(scope="module")
def held_out(demo_model):
    samples = list(generate(200, seed=HELD_OUT_SEED))
    return samples, demo_model.encode_images([s.image for s in samples])


def _named(caption, bank: str) -> list[str]:
    return [c.label.split()[-1] for c in caption.banks[bank] if not c.typographic_suspect]


def test_captions_name_the_right_shape_and_colour(captioner, held_out):
    samples, vectors = held_out
    captions = [captioner.caption_vector(v, f"img{i}") for i, v in enumerate(vectors)]
    shape_right = np.mean([s.scene.shape in _named(c, "demo_shapes") for s, c in zip(samples, captions)])
    colour_right = np.mean([s.scene.colour in _named(c, "demo_colours") for s, c in zip(samples, captions)])
    shape_wrong = np.mean([bool(set(_named(c, "demo_shapes")) - {s.scene.shape}) for s, c in zip(samples, captions)])
    colour_wrong = np.mean([bool(set(_named(c, "demo_colours")) - {s.scene.colour}) for s, c in zip(samples, captions)])
    print(f"shape named {shape_right:.3f} (a wrong one {shape_wrong:.3f}); "
          f"colour named {colour_right:.3f} (a wrong one {colour_wrong:.3f})")
    assert shape_right >= 0.85 and colour_right >= 0.85
    assert shape_wrong <= 0.10 and colour_wrong <= 0.10
    first = captions[0]
    scene = samples[0].scene
    assert f"a {scene.shape}" in first.caption and scene.colour in first.caption
    assert first.llm() == f"[Image Attached: {first.caption}]"


def test_a_bank_with_no_fitting_label_contributes_nothing(demo_model, held_out):
    samples, vectors = held_out
    demo_shapes, demo_colours = builtin_bank("demo_shapes"), builtin_bank("demo_colours")
    spoke = 0
    for sample, vector in zip(samples[:100], vectors[:100]):
        wrong_shapes = replace(demo_shapes, name="other_shapes",
                               labels=tuple(label for label in demo_shapes.labels if label != f"a {sample.scene.shape}"))
        wrong_colours = replace(demo_colours, name="other_colours",
                                labels=tuple(label for label in demo_colours.labels if label != sample.scene.colour))
        caption = Captioner(demo_model, [wrong_shapes, wrong_colours]).caption_vector(vector)
        spoke += bool(caption.banks["other_shapes"]) + bool(caption.banks["other_colours"])
        if not caption.banks["other_shapes"]:
            assert "Image with" not in caption.caption  # its sentence is left out, not written empty
    print(f"banks without the right label kept one in {spoke} of 200 cases")
    assert spoke <= 20


def test_typographic_guard_marks_a_word_that_contradicts_the_picture(demo_model):
    """A shape drawn with another shape's name on a sign: the sign's word is marked, the drawn shape is not."""
    captioner = Captioner(demo_model, ["demo_shapes"])
    lenient = replace(builtin_bank("demo_shapes"), threshold=0.0)  # keeps its top-k whatever they score
    strict, keeper = Captioner(demo_model, [lenient]), Captioner(demo_model, [lenient], keep_typographic=True)
    rng = random.Random(11)
    trials, marked, true_marked, clean_marked, word_in_caption = 80, 0, 0, 0, 0
    for _ in range(trials):
        scene = random_scene(rng)
        word = rng.choice([s for s in SHAPES if s != scene.shape])
        vector = demo_model.encode_images([render_scene(replace(scene, word=word), rng)])[0]
        judged = {c.label: c for c in captioner.judge(vector, "demo_shapes")}
        marked += judged[f"a {word}"].typographic_suspect
        true_marked += judged[f"a {scene.shape}"].typographic_suspect
        word_in_caption += f"a {word}" in captioner.caption_vector(vector).caption
        clean = captioner.caption_vector(demo_model.encode_images([render_scene(scene, rng)])[0])
        clean_marked += any(c.typographic_suspect for c in clean.banks["demo_shapes"])
        kept = strict.caption_vector(vector)
        suspects = [c.label for c in kept.banks["demo_shapes"] if c.typographic_suspect]
        assert not any(label in kept.caption for label in suspects)  # marked labels stay out of the sentence...
        assert all(label in keeper.caption_vector(vector).caption for label in suspects)  # ...unless kept
    print(f"sign's word marked {marked}/{trials}, drawn shape marked {true_marked}/{trials}; "
          f"a kept label of the clean picture marked {clean_marked}/{trials}; sign's word in the caption {word_in_caption}")
    assert marked >= 0.5 * trials
    assert true_marked <= 0.15 * trials and clean_marked <= 0.1 * trials
    assert word_in_caption <= 0.05 * trials


def test_the_guard_reads_relative_to_the_other_candidates():
    visual = np.array([0.30, 0.28, 0.20])
    assert typographic_suspects(visual, np.array([0.50, 0.50, 0.50])).tolist() == [False, False, False]
    assert typographic_suspects(visual, np.array([0.45, 0.60, 0.45])).tolist() == [False, True, False]


def test_a_second_run_encodes_no_text(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPLENS_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def counting(encoder):
        original = encoder.encode_texts
        encoder.encode_texts = lambda texts: calls.append(len(list(texts))) or original(texts)
        return encoder

    first = Captioner(counting(cliplens.load_model("demo", device="cpu", backend="torch", cache=False)))
    assert first.texts_encoded == sum(calls) > 0
    calls.clear()
    second = Captioner(counting(cliplens.load_model("demo", device="cpu", backend="torch", cache=False)))
    assert calls == [] and second.texts_encoded == 0
    image = EXAMPLES / "blue-star.png"
    assert second.caption(image) == first.caption(image)


@pytest.mark.filterwarnings("ignore::cliplens.TextTruncatedWarning")
def test_refine_stays_in_its_time_budget_and_never_lowers_the_caption_score(captioner, held_out):
    _, vectors = held_out
    for vector in vectors[:5]:
        plain = captioner.caption_vector(vector)
        start = time.monotonic()
        refined = captioner.caption_vector(vector, refine=True, refine_seconds=0.5)
        assert time.monotonic() - start < 0.5 + 1.0  # one batch of variants may finish after the deadline
        if plain.caption:
            before, after = captioner.encoder.encode_texts([plain.caption, refined.caption]) @ vector
            assert after >= before - 1e-6


def test_platt_scaling_recovers_a_known_curve_and_kept_quality_counts_top_k():
    rng = np.random.default_rng(0)
    z, m = rng.normal(0, 3, 20000), rng.normal(0, 0.1, 20000)
    fits = rng.random(20000) < 1 / (1 + np.exp(-(1.5 + 0.5 * z + 20 * m)))
    a, b, c = fit_platt(z, m, fits)
    assert a == pytest.approx(1.5, abs=0.15) and b == pytest.approx(0.5, abs=0.05) and c == pytest.approx(20, abs=2)
    bank = LabelBank("x", ("a", "b"), top_k=1, threshold=0.5)
    judged = [[(0.9, True), (0.8, False)], [(0.7, False)], [(0.2, True)]]
    assert kept_quality(judged, bank, in_bank=2) == (0.5, 0.5, 0.5)


def test_calibrate_bank_on_labelled_demo_images(demo_model, tmp_path):
    from cliplens.inputs.demo_data import write_demo_data

    pairs = write_demo_data(tmp_path / "data", 120, seed=3)
    fit = calibrate_bank(builtin_bank("demo_colours"), pairs, demo_model, column="colour")
    assert fit.images == 120 and fit.in_bank == 120
    assert fit.bank.calibration != (0.0, 1.0, 0.0) and fit.f1 > 0.8
    from cliplens.text.banks import parse_bank

    assert parse_bank(fit.bank.to_text()).calibration == fit.bank.calibration
    with pytest.raises(cliplens.DataError, match="no image is labelled"):
        calibrate_bank(builtin_bank("demo_shapes"), pairs, demo_model, column="shape")  # "circle" is not "a circle"
    assert calibrate_bank(builtin_bank("demo_shapes"), pairs, demo_model, column="shape", label_format="a {}").f1 > 0.8


@pytest.mark.slow
def test_caption_command_formats_and_bad_input(cli, tmp_path):
    star = str(EXAMPLES / "blue-star.png")
    proc = cli("caption", star, "--model", "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == {"image", "caption", "llm", "out_of_distribution", "banks"} and data["image"] == star
    assert 0 <= data["out_of_distribution"] < 0.5
    assert list(data["banks"]) == ["demo_shapes", "demo_colours", "demo_backgrounds"]
    for labels in data["banks"].values():
        for label in labels:
            assert set(label) == {"label", "score", "typographic_suspect"}
    assert "star" in data["caption"] and "blue" in data["caption"]
    proc = cli("caption", star, "--model", "demo")
    assert proc.stdout == f"[Image Attached: {data['caption']}]\n"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    many = [star, str(bad), str(EXAMPLES / "two-red-circles.png")]
    proc = cli("caption", *many, "--model", "demo", "-f", "jsonl")
    assert proc.returncode == 1 and "bad.png" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # JSONL: a row per image, as classify writes
    assert [Path(d["image"]).name for d in lines] == ["blue-star.png", "bad.png", "two-red-circles.png"]
    assert "caption" in lines[0] and set(lines[1]) == {"image", "error"} and "caption" in lines[2]
    proc = cli("caption", *many, "--model", "demo", "--json")  # one JSON object: results and errors
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["model"] == "demo"
    assert [Path(d["image"]).name for d in data["results"]] == ["blue-star.png", "two-red-circles.png"]
    assert [(Path(e["path"]).name, set(e)) for e in data["errors"]] == [("bad.png", {"path", "reason"})]
    proc = cli("caption", star, "--model", "demo", "--banks", "nope")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown bank 'nope'" in proc.stderr


@pytest.mark.slow
def test_banks_commands(cli, tmp_path):
    proc = cli("banks", "list", "--model", "demo", "--json")
    listed = {b["name"]: b for b in json.loads(proc.stdout)["banks"]}
    assert listed["objects"]["labels"] >= 1000 and listed["demo_shapes"]["default"] and not listed["objects"]["default"]
    proc = cli("banks", "show", "demo_colours")
    assert proc.stdout.startswith("# name: demo_colours") and "\nred\n" in proc.stdout
    cache = {"CLIPLENS_CACHE_DIR": str(tmp_path / "cache")}
    first = cli("banks", "build", "--model", "demo", "--json", env=cache)
    second = cli("banks", "build", "--model", "demo", "--json", env=cache)
    assert json.loads(first.stdout)["texts_encoded"] > 0, first.stderr
    assert json.loads(second.stdout)["texts_encoded"] == 0
