"""The bundled demo model must really work on its domain (fresh held-out images, never seen in training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cliplens
from cliplens.inputs.demo_data import DEMO_LABELS, generate
from cliplens.scores.metrics import text_to_image_recall, zero_shot_top_k
from cliplens.models import DEMO_DIR

HELD_OUT_SEED = 20261122  # the bundled model was trained on seed 0
EXAMPLES = Path(cliplens.__file__).parent / "examples"


@pytest.fixture(scope="module")
def held_out(demo_model):
    samples = list(generate(500, seed=HELD_OUT_SEED))
    vectors = demo_model.encode_images([s.image for s in samples])
    return samples, vectors


def test_zero_shot_top1_at_least_90_percent(demo_model, held_out):
    samples, vectors = held_out
    labels = demo_model.encode_texts([f"a photo of a {label}." for label in DEMO_LABELS])
    truth = [DEMO_LABELS.index(s.scene.label) for s in samples]
    accuracy = zero_shot_top_k(vectors, labels, truth, k=1)
    print(f"demo zero-shot top-1 on 500 held-out images: {accuracy:.3f}")
    assert accuracy >= 0.90


def test_text_to_image_recall_at_5_at_least_90_percent(demo_model, held_out):
    samples, vectors = held_out
    captions = [s.scene.full_caption for s in samples]
    recall = text_to_image_recall(demo_model.encode_texts(captions), vectors, captions, k=5)
    print(f"demo text→image recall@5 on 500 held-out images: {recall:.3f}")
    assert recall >= 0.90


def test_demo_model_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in DEMO_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= set(files)
    assert sum(files.values()) <= 15 * 2**20


def test_classify_example_image(demo_model):
    result = cliplens.classify(EXAMPLES / "two-red-circles.png", ["blue circle", "red circle", "red square"], demo_model)
    assert [s.label for s in result.labels][0] == "red circle"
    assert result.labels[0].probability > 0.5
    assert sum(s.probability for s in result.labels) == pytest.approx(1.0, abs=1e-5)
    assert result.labels[0].similarity > result.labels[-1].similarity


def test_classify_multi_label_gives_independent_probabilities(demo_model):
    result = cliplens.classify(EXAMPLES / "blue-star.png", ["blue star", "blue cross", "red circle"], demo_model,
                               multi_label=True)
    assert result.labels[0].label == "blue star"
    assert sum(s.probability for s in result.labels) != pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow
def test_cli_classify_json_and_text():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    image = str(EXAMPLES / "three-yellow-triangles.png")
    proc = subprocess.run([sys.executable, "-m", "cliplens.cli", "classify", image, "yellow triangle", "red star",
                           "--model", "demo", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["image"] == image and data["model"] == "demo"
    assert [d["label"] for d in data["labels"]] == ["yellow triangle", "red star"]
    assert set(data["labels"][0]) == {"label", "probability", "similarity"}
    proc = subprocess.run([sys.executable, "-m", "cliplens.cli", "classify", image, "yellow triangle", "red star",
                           "--model", "demo"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[0].startswith("yellow triangle")
    assert "%" in proc.stdout and proc.stderr == ""


@pytest.mark.parametrize("content, reason", [(None, "no such file"), (b"", "empty file"),
                                             (b"plain text", "not an image")])
def test_cli_classify_bad_image_is_one_line_exit_2(tmp_path, content, reason):
    image = tmp_path / "bad.jpg"
    if content is not None:
        image.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "cliplens.cli", "classify", str(image), "red circle", "blue star", "--model", "demo"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {image}: {reason}"), proc.stderr
