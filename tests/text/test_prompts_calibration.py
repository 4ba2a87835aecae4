"""Prompt templates, label hygiene and the calibration maths, checked on made-up numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cliplens
from cliplens.scores.calibration import (Calibration, FitDetector, expected_calibration_error, fit_calibration,
                                  fit_detector, fit_temperature)
from cliplens.errors import DataError, UsageError
from cliplens.text.prompts import LabelWarning, clean_labels, label_embeddings, prompts_for, resolve_templates
from cliplens.scores.probabilities import softmax


def test_template_sets():
    assert resolve_templates() == ["a photo of a {}."]
    assert resolve_templates(template="a {} here") == ["a {} here"]
    assert resolve_templates("none") is None and resolve_templates(template="none") is None
    imagenet = resolve_templates("imagenet")
    assert len(imagenet) == 80 and len(set(imagenet)) == 80 and all("{}" in t for t in imagenet)
    assert "itap of a {}." in imagenet and "a photo of a {}." in imagenet
    assert len(resolve_templates("imagenet-7")) == 7
    assert len(cliplens.imagenet_classes()) == 1000


def test_template_file_and_bad_templates(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("# mine\na photo of a {}.\n\na sketch of a {}.\n")
    assert resolve_templates(str(good)) == ["a photo of a {}.", "a sketch of a {}."]
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a {}.\na photo of nothing\n")
    with pytest.raises(DataError, match=r"bad.txt:2: template 'a photo of nothing' needs a \{\}"):
        resolve_templates(str(bad))
    with pytest.raises(UsageError, match="unknown template set 'imagenot'.*imagenet"):
        resolve_templates("imagenot")
    with pytest.raises(UsageError, match="needs a"):
        resolve_templates(template="no slot")


def test_labels_are_cleaned_with_warnings():
    with pytest.warns(LabelWarning) as caught:
        assert clean_labels(["cat", " cat ", "", "dog", "  "]) == ["cat", "dog"]
    messages = [str(w.message) for w in caught]
    assert any("repeated label 'cat'" in m for m in messages) and any("2 empty labels" in m for m in messages)
    with pytest.raises(UsageError, match="no labels"):
        clean_labels(["", " "])


def test_unreadable_labels_are_named(demo_model):
    from cliplens.text.prompts import warn_unreadable

    with pytest.warns(LabelWarning, match=r"demo does not know every word of 1 label\(s\) \('vanilla sugar'\)"):
        warn_unreadable(demo_model, ["red circle", "vanilla sugar"])


def test_prompt_ensemble_is_the_normalised_mean(demo_model):
    labels, templates = ["red circle", "blue star"], ["a photo of a {}.", "a drawing of a {}.", "{}"]
    assert prompts_for(labels, templates)[:3] == ["a photo of a red circle.", "a drawing of a red circle.", "red circle"]
    got = label_embeddings(demo_model, labels, templates)
    each = demo_model.encode_texts(prompts_for(labels, templates)).reshape(2, 3, -1).mean(1)
    np.testing.assert_allclose(got, each / np.linalg.norm(each, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(label_embeddings(demo_model, labels, None), demo_model.encode_texts(labels), atol=1e-6)


def test_temperature_fit_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, size=(4000, 10))
    truth = np.array([rng.choice(10, p=p) for p in softmax(logits / 2.0)])  # labels drawn at temperature 2
    assert fit_temperature(logits, truth) == pytest.approx(2.0, rel=0.1)
    before = expected_calibration_error(softmax(logits), truth)
    after = expected_calibration_error(softmax(logits / 2.0), truth)
    assert before > 0.1 and after < 0.03


def test_fit_detector_separates_fits_from_misses():
    rng = np.random.default_rng(1)
    reference = rng.normal(30, 2, 2000)
    fits = np.r_[np.ones(1000), np.zeros(1000)]
    label = reference + np.where(fits == 1, rng.normal(0, 1, 2000), rng.normal(-8, 1, 2000))
    detector = fit_detector(label, reference, fits)
    p = detector.probability(label, reference)
    assert (p[fits == 1] > 0.5).mean() > 0.98 and (p[fits == 0] < 0.5).mean() > 0.98


def _calibration(scores, **kw):
    return Calibration(model="demo", templates=None, classes=["a", "b"], reference=["a", "b"], scores=scores, **kw)


def test_conformal_quantile_is_the_finite_sample_rank():
    calibration = _calibration(sorted(np.linspace(0, 1, 99).tolist()))
    assert calibration.quantile(0.9) == pytest.approx(np.linspace(0, 1, 99)[89])  # ceil(100 * 0.9) = 90th
    assert _calibration([0.1, 0.2]).quantile(0.9) == 1.0  # too few points: every label
    with pytest.raises(UsageError, match="between 0 and 1"):
        calibration.quantile(1.5)


def test_calibration_file_round_trip_and_bad_files(tmp_path):
    calibration = _calibration([0.1, 0.2, 0.3], temperature=1.5, detector=FitDetector(2.0, 0.1, 0.9))
    path = calibration.save(tmp_path / "c.json")
    loaded = Calibration.load(path)
    assert loaded.temperature == 1.5 and loaded.detector == FitDetector(2.0, 0.1, 0.9) and loaded.source == str(path)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="x.json: not a calibration file"):
        Calibration.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"format": "cliplens-calibration/1", "model": "demo"}))
    with pytest.raises(DataError, match="y.json: malformed calibration file"):
        Calibration.load(tmp_path / "y.json")
    with pytest.raises(UsageError, match="no such file"):
        Calibration.load(tmp_path / "missing.json")


def test_fit_calibration_on_separable_embeddings():
    rng = np.random.default_rng(2)
    classes = np.eye(4, 16, dtype=np.float32)
    truth = rng.integers(0, 4, 400)
    images = classes[truth] + rng.normal(0, 0.3, (400, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    reference_best = (images @ classes.T).max(1)
    calibration = fit_calibration(images, truth, classes, reference_best, 10.0, model="m", templates=None,
                                  classes=list("abcd"), reference=list("abcd"))
    report = calibration.report
    assert report["accuracy"] > 0.95 and report["ece_after"] <= report["ece_before"] + 1e-9
    assert report["none_of_these"]["flagged_in_domain"] < 0.1 < 0.9 < report["none_of_these"]["flagged_out_of_domain"]
    assert calibration.scores == sorted(calibration.scores) and len(calibration.scores) == 400
    with pytest.raises(UsageError, match="at least 20 images"):
        fit_calibration(images[:5], truth[:5], classes, reference_best[:5], 10.0, model="m", templates=None,
                        classes=list("abcd"), reference=list("abcd"))
