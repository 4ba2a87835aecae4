""""None of these" for images outside the labels' world: the open-set detector (kNN on calibration embeddings,
reference and negative captions) fitted by calibrate, used by classify, caption and the service, measured by
bench open-set."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import cliplens
from cliplens.bench.data import photo
from cliplens.errors import DataError, UsageError
from cliplens.inputs.demo_data import DEMO_LABELS, generate, write_demo_data
from cliplens.inputs.open_world import KINDS, open_world_images
from cliplens.models import DEMO_DIR
from cliplens.scores.calibration import Calibration
from cliplens.scores.open_set import (OpenSetDetector, auroc, decode_sample, encode_sample, fit_open_set,
                                      fpr_at_tpr, knn_distance)

HELD_OUT_SEED = 20261203  # no training, calibration or benchmark run uses it
LABELS = list(DEMO_LABELS)[:12]


# --- the maths ---------------------------------------------------------------------------------------

def test_knn_distance_is_the_distance_to_the_kth_neighbour():
    sample = np.eye(4, dtype=np.float32)
    query = np.array([[1.0, 0, 0, 0], [0.6, 0.8, 0, 0]], np.float32)
    assert knn_distance(query, sample, k=1) == pytest.approx([0.0, 0.2])
    assert knn_distance(query, sample, k=2) == pytest.approx([1.0, 0.4])
    # judged against the others only: each row's nearest is then another row
    assert knn_distance(sample, sample, k=1, leave_one_out=True) == pytest.approx([1.0] * 4)


def test_auroc_and_fpr95_match_their_definitions():
    inside, outside = np.array([0.1, 0.2, 0.3, 0.9]), np.array([0.4, 0.8, 0.95, 0.99])
    pairs = [(i < o) + 0.5 * (i == o) for i in inside for o in outside]
    assert auroc(inside, outside) == pytest.approx(np.mean(pairs))
    assert auroc(outside, inside) == pytest.approx(1 - np.mean(pairs))
    assert auroc(np.ones(3), np.ones(3)) == pytest.approx(0.5)
    # the threshold that flags 95% of the outside images (all but the lowest one's share) also flags 0.9
    assert fpr_at_tpr(inside, outside) == pytest.approx(0.25)


def test_the_detector_survives_its_file_form_and_learns_which_side_is_outside():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sample = unit(rng.normal(size=(50, 8)) + 4)  # a tight cluster
    inside = np.c_[rng.uniform(0.0, 0.1, 200), rng.normal(0.3, 0.02, 200), rng.normal(0, 0.02, 200)]
    outside = np.c_[rng.uniform(0.2, 0.6, 200), rng.normal(0.2, 0.02, 200), rng.normal(0, 0.02, 200)]
    detector = fit_open_set(inside, outside, sample, negatives=["a tree"])
    assert detector.weights[0] > 0  # farther from the calibration images means more likely outside
    assert (detector.probability(inside) < 0.5).mean() > 0.95 and (detector.probability(outside) >= 0.5).mean() > 0.95
    again = OpenSetDetector.from_dict(json.loads(json.dumps(detector.to_dict())))
    assert again.weights == detector.weights and again.negatives == ["a tree"]
    assert np.abs(again.sample - sample).max() < 1e-3  # kept as float16
    assert np.allclose(decode_sample(encode_sample(sample), 8), sample, atol=1e-3)


# --- the demo model's shipped calibration ----------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(demo_model):
    return cliplens.Classifier(LABELS, demo_model)


def _outside(count: int, seed: int) -> list:
    images = [image for _, image in open_world_images(count, seed=seed)]
    return images + [photo(seed + i, (320, 240)) for i in range(count // len(KINDS))]


def test_images_from_outside_the_labels_world_are_none_of_these(classifier):
    outside = _outside(40, HELD_OUT_SEED)
    results = classifier.score_vectors(classifier.encoder.encode_images(outside), [""] * len(outside))
    flagged = np.mean([r.is_none_of_these for r in results])
    assert flagged >= 0.8, flagged
    assert all(r.out_of_distribution is not None for r in results)
    assert np.mean([r.out_of_distribution >= 0.5 for r in results]) >= 0.8  # the image side says why


def test_scenes_offered_their_own_label_are_rarely_flagged_and_wrong_labels_still_are(demo_model):
    # as a user offers labels: each scene gets 12 of the 30, once with its own among them and once without
    from cliplens.classify import none_of_these

    labels = list(DEMO_LABELS)
    everything = cliplens.Classifier(labels, demo_model)
    samples = list(generate(300, seed=HELD_OUT_SEED))
    _, fit, outside, _ = everything.evidence(demo_model.encode_images([s.image for s in samples]))
    rng = np.random.default_rng(0)
    right, wrong = [], []
    for row, sample in enumerate(samples):
        truth = labels.index(sample.scene.label)
        others = rng.permutation(np.delete(np.arange(len(labels)), truth))
        right.append(1 - fit[row, np.r_[truth, others[:11]]].max())
        wrong.append(1 - fit[row, others[:12]].max())
    assert np.mean(none_of_these(np.array(right), outside) >= 0.5) <= 0.05
    assert np.mean(none_of_these(np.array(wrong), outside) >= 0.5) >= 0.95


def test_the_json_gives_the_parts_of_none_of_these(demo_model, classifier):
    blank = classifier.classify(Image.new("RGB", (200, 200), (255, 255, 255)))
    data = blank.to_dict()
    assert set(data) >= {"none_of_these", "no_label_fits", "out_of_distribution"}
    assert data["none_of_these"] == pytest.approx(1 - (1 - data["out_of_distribution"]) * (1 - data["no_label_fits"]))
    assert data["out_of_distribution"] >= 0.5 and data["none_of_these"] >= 0.5


def test_without_image_side_evidence_none_of_these_is_the_label_side_alone(demo_model):
    calibration = Calibration.load(DEMO_DIR / "cliplens_calibration.json")
    label_side = cliplens.Classifier(LABELS, demo_model, calibration=replace(calibration, open_set=None))
    texture = next(image for kind, image in open_world_images(8, seed=5) if kind == "texture")
    result = label_side.classify(texture)
    assert result.out_of_distribution is None and result.to_dict()["out_of_distribution"] is None
    assert result.none_of_these == result.no_label_fits
    assert result.none_of_these < 0.5  # the complaint this detector answers: a texture "fits" a label here
    both = cliplens.Classifier(LABELS, demo_model, calibration=calibration).classify(texture)
    assert both.out_of_distribution >= 0.5 and both.none_of_these >= 0.5


def test_a_bank_contributes_nothing_for_an_image_from_outside(demo_model):
    captioner = cliplens.Captioner(demo_model)
    texture = next(image for kind, image in open_world_images(8, seed=5) if kind == "texture")
    outside = captioner.caption(texture)
    assert outside.out_of_distribution >= 0.5 and outside.caption == "" and outside.llm() == "[Image Attached]"
    inside = captioner.caption(next(generate(1, seed=HELD_OUT_SEED)).image)
    assert inside.out_of_distribution < 0.5 and inside.caption
    assert inside.to_dict()["out_of_distribution"] == inside.out_of_distribution


# --- calibrating on the open world -----------------------------------------------------------------

@pytest.fixture(scope="module")
def small_calibration(tmp_path_factory, demo_model):
    folder = tmp_path_factory.mktemp("calib")
    write_demo_data(folder / "data", 120, seed=HELD_OUT_SEED)
    backgrounds = folder / "backgrounds"
    backgrounds.mkdir()
    for i in range(6):
        photo(i, (160, 120)).save(backgrounds / f"wall{i}.jpg")
    run = cliplens.calibrate(folder / "data" / "pairs.csv", demo_model, background=backgrounds, open_world=60)
    return run.calibration, folder


def test_calibrate_fits_the_open_set_detector_and_keeps_it_in_the_file(small_calibration, demo_model):
    calibration, folder = small_calibration
    report = calibration.report["open_set"]
    assert report["sample"] == 120 and report["background_images"] == 6 and report["out_of_distribution_images"] == 66
    assert report["flagged_in_distribution"] <= 0.1 and report["flagged_out_of_distribution"] >= 0.8
    assert calibration.open_set.sample.shape == (120, demo_model.embed_dim)
    saved = calibration.save(folder / "calibration.json")
    loaded = Calibration.load(saved)
    assert loaded.open_set.weights == calibration.open_set.weights
    assert loaded.open_set.negatives == calibration.open_set.negatives
    blank = Image.new("RGB", (128, 128), (0, 0, 0))
    ours = cliplens.classify(blank, LABELS, demo_model, calibration=saved)
    assert ours.out_of_distribution == pytest.approx(
        float(calibration.open_set.probability(cliplens.Classifier(LABELS, demo_model, calibration=calibration)
                                               .open_set.features(demo_model.encode_images([blank])))[0]), abs=1e-4)


def test_a_missing_background_folder_is_a_usage_error(demo_model, tmp_path):
    write_demo_data(tmp_path / "data", 30, seed=1)
    with pytest.raises(UsageError) as info:
        cliplens.calibrate(tmp_path / "data" / "pairs.csv", demo_model, background=tmp_path / "nope", open_world=10)
    assert info.value.parameter == "background"


def test_a_damaged_open_set_part_is_named_not_trusted(small_calibration, tmp_path):
    calibration, _ = small_calibration
    data = calibration.to_dict()
    data["open_set"]["sample"] = data["open_set"]["sample"][:-7] + "!!"  # truncated base64
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="damaged.json"):
        Calibration.load(path)


@pytest.mark.slow
def test_bench_open_set_prints_the_literature_figures():
    from cliplens.bench.process import cliplens_command

    proc = subprocess.run(cliplens_command() + ["bench", "open-set", "--inside", "200", "--per-kind", "30", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["auroc"] >= 0.97 and figures["fpr95"] <= 0.10
    assert figures["flagged_outside"] >= 0.8 and figures["flagged_inside_right_label"] <= 0.05
    assert figures["flagged_inside_wrong_labels"] >= 0.95
    assert set(figures["flagged_outside_by_kind"]) == {*KINDS, "photo", "gradient"}
    assert figures["classify_ms"]["added"] <= 2.0
