"""The benchmark machinery: the reference loop computes what cliplens computes, the figures come from
real runs, and the commands print exactly the JSON they promise. (Speed itself is never asserted.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cliplens
from cliplens.bench.data import many_files, photo
from cliplens.bench.process import cliplens_command, run_measured
from cliplens.bench.throughput import ReferenceLoop, image_throughput, text_throughput


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(5):
        photo(i, (320, 240)).save(folder / f"p{i}.jpg", quality=90)
    return folder


def test_photo_is_deterministic_and_varied():
    a, b, c = photo(1, (300, 200)), photo(1, (300, 200)), photo(2, (300, 200))
    assert a.size == (300, 200) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.abs(np.asarray(a, np.float32) - np.asarray(c, np.float32)).mean() > 10


def test_reference_loop_computes_the_same_embeddings(tiny_clip_dir, photo_dir):
    # the two paths of `bench embed` must do the same work, or the ratio means nothing
    paths = sorted(photo_dir.glob("*.jpg"))
    ours = cliplens.load_model(str(tiny_clip_dir), backend="torch", cache=False).encode_images(paths)
    theirs = ReferenceLoop(tiny_clip_dir).embed_images(paths)
    assert theirs.shape == ours.shape
    assert np.min(np.sum(ours * theirs, axis=1)) > 0.999
    texts = ["a red cat", "two dogs on a blue background"]
    ours_t = cliplens.embed_texts(texts, cliplens.load_model(str(tiny_clip_dir), backend="torch", cache=False))
    assert np.min(np.sum(ours_t * ReferenceLoop(tiny_clip_dir).embed_texts(texts), axis=1)) > 0.9999


@pytest.mark.slow
def test_throughput_figures_come_from_runs(tiny_clip_dir, photo_dir):
    paths = sorted(photo_dir.glob("*.jpg"))
    result = image_throughput(paths, "tiny", tiny_clip_dir, rounds=1, backend="torch")
    assert result.items == len(paths) and result.cliplens_per_s > 0 and result.reference_per_s > 0
    assert result.ratio == pytest.approx(result.cliplens_per_s / result.reference_per_s)
    texts = text_throughput(["a cat", "a dog", "a red square"], "tiny", tiny_clip_dir, rounds=1, backend="onnx")
    assert texts.backend == "onnx" and texts.items == 3 and texts.cliplens_per_s > 0


def test_run_measured_reports_the_child_peak_memory():
    allocate = "import numpy as np; a = np.ones(300 * 2**20 // 8); print(a.sum())"
    stats = run_measured([sys.executable, "-c", allocate])
    assert stats.returncode == 0 and stats.wall_s > 0
    assert stats.peak_rss_mb > 300
    failing = run_measured([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    assert failing.returncode == 3 and "boom" in failing.stderr


def test_many_files_are_distinct_copies_with_the_same_pixels(photo_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPLENS_CACHE_DIR", str(tmp_path))
    folder = many_files(photo_dir, 12, "many-12")
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 12 and len({f.read_bytes() for f in files}) == 12
    same = [np.asarray(Image.open(p).convert("RGB")) for p in (files[0], files[5], photo_dir / "p0.jpg")]
    assert np.array_equal(same[0], same[2]) and np.array_equal(same[1], same[2])


def _bench(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cliplens_command() + ["bench", *args], capture_output=True, text=True, env=env, timeout=300)


THROUGHPUT_FIELDS = ["model", "images", "backend", "precision", "cliplens_images_per_s", "reference_images_per_s",
                     "ratio", "cpu", "cpu_features", "runtime_choice", "recall_at_10_vs_fp32"]


def test_bench_embed_times_the_runtime_auto_picks_for_rankings(tiny_clip_dir, photo_dir):
    from cliplens.models.machine import machine_key
    from cliplens.models.parity import read_verdicts

    proc = _bench("embed", "--model", str(tiny_clip_dir), "--images", str(photo_dir), "-n", "4", "--rounds", "1",
                  "--json")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert list(figures) == THROUGHPUT_FIELDS + ["target_ratio"]
    assert figures["images"] == 4 and figures["model"] == str(tiny_clip_dir)
    assert figures["ratio"] == pytest.approx(figures["cliplens_images_per_s"] / figures["reference_images_per_s"],
                                             rel=0.02)
    choice = figures["runtime_choice"]
    assert (choice["backend"], choice["precision"]) == (figures["backend"], figures["precision"])
    verdicts = read_verdicts(tiny_clip_dir, machine_key())  # measured by the benchmark, as auto measures them
    timed = verdicts[f"{figures['backend']} {figures['precision']}"]
    assert timed.rankings and figures["recall_at_10_vs_fp32"] == round(timed.recall_at_10, 4)
    assert all(not v.rankings for v in verdicts.values() if v.images_per_s > timed.images_per_s)
    assert figures["cpu_features"] == list(cliplens.models.machine.cpu_features())
    assert figures["target_ratio"] == (4.0 if "avx512f" in figures["cpu_features"] else 3.0)


def test_bench_classify_reports_speed_and_the_probability_difference(tiny_clip_dir, photo_dir):
    proc = _bench("classify", "--model", str(tiny_clip_dir), "--images", str(photo_dir), "-n", "5", "--rounds", "1",
                  "--label", "a red cat", "--label", "a dog", "--label", "two blue squares", "--json")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert list(figures) == THROUGHPUT_FIELDS + ["labels", "max_probability_delta", "target_ratio"]
    assert figures["images"] == 5 and figures["labels"] == 3
    assert 0 < figures["max_probability_delta"] <= 0.01  # measured, not assumed: fp32 paths differ in rounding
    assert figures["runtime_choice"]["reason"].startswith("the fastest runtime meeting the probabilities contract")


def test_classify_throughput_compares_the_same_probabilities(tiny_clip_dir, photo_dir):
    from cliplens.bench.throughput import classify_throughput

    paths = sorted(photo_dir.glob("*.jpg"))
    encoder = cliplens.load_model(str(tiny_clip_dir), backend="torch", precision="fp32", cache=False)
    result = classify_throughput(paths, ["a red cat", "a dog"], "tiny", tiny_clip_dir, rounds=1, encoder=encoder)
    # fp32 on both sides: what differs is the JPEG decode (cliplens decodes large JPEGs at reduced scale)
    assert result.items == 5 and result.labels == 2 and result.max_probability_delta < 1e-3
    bf16 = cliplens.load_model(str(tiny_clip_dir), backend="torch", precision="bf16", cache=False)
    strayed = classify_throughput(paths, ["a red cat", "a dog"], "tiny", tiny_clip_dir, rounds=1, encoder=bf16)
    assert strayed.max_probability_delta > result.max_probability_delta  # the figure sees a real difference


def test_bench_refuses_what_it_cannot_time(tiny_siglip_dir, tmp_path):
    proc = _bench("embed", "--model", str(tiny_siglip_dir), "--images", str(tmp_path), "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "CLIP checkpoint" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_bench_parity_json_on_the_demo_model():
    proc = _bench("parity", "--model", "demo", "-n", "40", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["images"] == 40 and report["labels"] == 30 and report["fp32_runtimes_match"]
    assert report["contracts"]["probabilities"]["max_probability_delta"] == 0.01
    runtimes = {r["runtime"]: r for r in report["results"]}
    assert {"onnx int8", "onnx fp32", "torch fp32"} <= set(runtimes)
    assert runtimes["onnx fp32"]["max_probability_delta"] <= 1e-4 and runtimes["onnx fp32"]["recall_at_10"] == 1.0
    assert all(r["reference"] == "torch fp32" and r["source"] == "bench parity" for r in runtimes.values())
    int8 = runtimes["onnx int8"]
    assert int8["probabilities"] == (int8["max_probability_delta"] <= 0.01 and int8["top1_agreement"] >= 0.995)


def test_bench_index_times_indexing_with_and_without_metadata(tiny_clip_dir):
    proc = _bench("index", "--model", str(tiny_clip_dir), "--backend", "torch", "-n", "3", "--rounds", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert list(figures) == ["model", "runtime", "images", "with_metadata_per_s", "without_metadata_per_s", "rounds",
                             "ratio", "target_ratio", "cpu", "cpu_features"]
    assert figures["images"] == 3 and figures["rounds"] == 2 and figures["runtime"] == "torch fp32"
    assert figures["ratio"] == pytest.approx(figures["with_metadata_per_s"] / figures["without_metadata_per_s"],
                                             abs=0.001)


def test_the_bench_photos_carry_a_cameras_exif_and_the_same_pixels(tmp_path):
    from cliplens.bench.library import photos_with_exif
    from cliplens.inputs.metadata import read_metadata

    source = tmp_path / "p.jpg"
    photo(0, (64, 48)).save(source, quality=90)
    copy = next(photos_with_exif([source]).glob("*.jpg"))
    meta = read_metadata(copy.read_bytes(), 0)
    assert meta.taken_source == "exif" and meta.camera == "Canon EOS R6" and meta.lat is not None
    assert np.array_equal(np.asarray(Image.open(copy)), np.asarray(Image.open(source)))


def test_bench_video_indexes_a_generated_1080p_film(tiny_clip_dir):
    pytest.importorskip("av")
    proc = _bench("video", "--model", str(tiny_clip_dir), "--backend", "torch", "--seconds", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert (figures["width"], figures["height"], figures["fps"]) == (1920, 1080, 30)
    assert figures["seconds_of_video"] == pytest.approx(2.0, abs=0.1) and figures["scenes"] >= 1
    assert figures["samples"] >= 2 and figures["bitrate_mbps"] > 0
    assert figures["index_realtime"] == pytest.approx(figures["seconds_of_video"] / figures["index_s"], rel=0.01)
