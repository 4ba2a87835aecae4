"""cliplens eval on the demo model: figures checked against independent computations, few-shot, retrieval,
the embedding cache, bad input, and the HTML report in headless Chromium."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import cliplens
from cliplens.inputs.demo_data import write_demo_data
from cliplens.errors import DataError, UsageError
from cliplens.evaluate import evaluate, read_label_names
from cliplens.text.prompts import parse_template_sets
from cliplens.reports import write_eval_report

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """300 demo images: 30 colour-shape labels (column label) and 5 shapes (column shape)."""
    return write_demo_data(tmp_path_factory.mktemp("eval-data"), 300, seed=808)


@pytest.fixture(scope="module")
def run(pairs, demo_model, tmp_path_factory):
    """One evaluation over the 30 labels with two template sets, and its report."""
    result = evaluate(pairs, demo_model, templates="default,imagenet-7")
    out = tmp_path_factory.mktemp("eval-report")
    return result, write_eval_report(result, out)


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _ece(probs: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """ECE written out independently: equal-width bins over (0, 1], |accuracy − confidence| weighted by count."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [i for i in range(len(truth)) if (low < confidence[i] <= high) or (b == 0 and confidence[i] <= 0)]
        if members:
            acc = np.mean([predicted[i] == truth[i] for i in members])
            total += len(members) / len(truth) * abs(acc - np.mean(confidence[members]))
    return total


def test_accuracy_matches_independent_computations(run, pairs, demo_model):
    result, index = run
    report = result.report
    zs = report["zero_shot"]
    rows = _rows(index.parent / "predictions.csv")
    assert report["task"] == "classification" and report["images"] == len(rows) == 300
    # 1. from the per-image predictions the report wrote
    assert zs["top1"] == pytest.approx(np.mean([r["label"] == r["prediction"] for r in rows]), abs=1e-12)
    assert zs["top1"] == pytest.approx(np.mean([r["correct"] == "True" for r in rows]), abs=1e-12)
    assert zs["top5"] == pytest.approx(np.mean([r["label"] in r["top5"].split("|") for r in rows]), abs=1e-12)
    # 2. from a direct Classifier run
    classes = [c["label"] for c in report["classes"]]
    classifier = cliplens.Classifier(classes, demo_model, template="a photo of a {}.", calibration=False)
    paths = [r["path"] for r in rows]
    vectors = demo_model.encode_images(paths)  # encoded afresh, not through the cache
    direct = [c.top.label for c in classifier.score_vectors(vectors, paths)]
    assert [r["prediction"] for r in rows] == direct
    # 3. from raw embeddings: top-1, top-5 and ECE written out here
    truth = np.array([classes.index(r["label"]) for r in rows])
    sims = vectors @ demo_model.encode_texts([f"a photo of a {c}." for c in classes]).T
    order = np.argsort(-sims, axis=1)
    assert zs["top1"] == pytest.approx(np.mean(order[:, 0] == truth), abs=1.5 / len(rows))
    assert zs["top5"] == pytest.approx(np.mean([t in o[:5] for t, o in zip(truth, order)]), abs=1.5 / len(rows))
    logits = sims * demo_model.logit_scale
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert zs["ece"] == pytest.approx(_ece(probs, truth), abs=2e-3)
    # per class and confusion matrix agree with the predictions
    matrix = np.array(zs["confusion"])
    assert matrix.sum() == 300 and np.trace(matrix) / 300 == pytest.approx(zs["top1"])
    for row in zs["per_class"]:
        mine = [r for r in rows if r["label"] == row["label"]]
        assert row["images"] == len(mine)
        if mine:
            assert row["accuracy"] == pytest.approx(np.mean([r["prediction"] == r["label"] for r in mine]))
    assert zs["top1"] > 0.9 and report["chance"] == pytest.approx(1 / 30)
    assert sum(b["count"] for b in zs["reliability"]) == 300
    names = [s["name"] for s in report["template_sets"]]
    assert names == ["a photo of a {}.", "imagenet-7"] and report["template_sets"][0]["top1"] == zs["top1"]


def test_report_files_and_json(run):
    result, index = run
    folder = index.parent
    saved = json.loads((folder / "report.json").read_text())
    assert saved["format"] == "cliplens-eval/1" and saved["zero_shot"]["top1"] == result.report["zero_shot"]["top1"]
    for name in ("templates.png", "per_class.png", "confusion.png", "reliability.png"):
        assert (folder / name).read_bytes().startswith(PNG) and name in saved["files"]
    html = index.read_text()
    assert "reliability.png" in html and "Confusion matrix" in html


def test_a_second_run_with_other_templates_encodes_no_images(pairs, demo_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPLENS_CACHE_DIR", str(tmp_path / "cache"))
    subset = tmp_path / "subset.csv"  # 100 of the images, by absolute path
    with subset.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for r in _rows(pairs)[:100]:
            writer.writerow([str(pairs.parent / r["path"]), r["label"]])
    first = evaluate(subset, demo_model, templates="default,none")
    assert first.images_encoded == 100 and first.report["images_cached"] == 0
    calls = []
    original = demo_model.encode_prepared
    monkeypatch.setattr(demo_model, "encode_prepared", lambda items: calls.append(len(items)) or original(items))
    second = evaluate(subset, demo_model, templates="none,imagenet-7")
    assert second.images_encoded == 0 and second.report["images_cached"] == 100 and calls == []
    assert second.report["zero_shot"]["top1"] == first.report["template_sets"][1]["top1"]
    fresh = evaluate(subset, demo_model, templates="none", use_cache=False)
    assert fresh.images_encoded == 100 and sum(calls) == 100
    assert fresh.report["zero_shot"]["top1"] == second.report["zero_shot"]["top1"]


def test_few_shot_probe_beats_chance(pairs, demo_model):
    result = evaluate(pairs, demo_model, column="shape", templates="default", few_shot=[1, 8], seed=3)
    rows = {r["k"]: r for r in result.report["few_shot"]}
    assert result.report["chance"] == pytest.approx(0.2)
    assert rows[8]["train"] == 40 and rows[8]["test"] == 260 and rows[1]["train"] == 5
    assert rows[8]["accuracy"] >= 0.6, rows  # chance is 0.2
    assert rows[8]["accuracy"] >= rows[1]["accuracy"] - 0.05
    assert 0.9 <= rows[8]["zero_shot_accuracy"] <= 1.0
    again = evaluate(pairs, demo_model, column="shape", templates="default", few_shot=[1, 8], seed=3)
    assert again.report["few_shot"] == result.report["few_shot"]  # seeded
    with pytest.raises(UsageError, match=r"^few_shot 500: class '\w+' has only \d+ image"):
        evaluate(pairs, demo_model, column="shape", few_shot=500)


def _brute_recall(image_vectors, text_vectors, relevant_of_image, ks=(1, 5, 10)):
    """Recall@k by sorting every item for every query."""
    i2t = {k: 0 for k in ks}
    t2i = {k: 0 for k in ks}
    relevant_of_text = {}
    for i, texts in relevant_of_image.items():
        for t in texts:
            relevant_of_text.setdefault(t, set()).add(i)
    for i in range(len(image_vectors)):
        order = list(np.argsort(-(text_vectors @ image_vectors[i])))
        first = min(order.index(t) for t in relevant_of_image[i])
        for k in ks:
            i2t[k] += first < k
    for t in range(len(text_vectors)):
        order = list(np.argsort(-(image_vectors @ text_vectors[t])))
        first = min(order.index(i) for i in relevant_of_text[t])
        for k in ks:
            t2i[k] += first < k
    return ({k: v / len(image_vectors) for k, v in i2t.items()}, {k: v / len(text_vectors) for k, v in t2i.items()})


def test_retrieval_recall_matches_brute_force(pairs, demo_model, tmp_path):
    rows = _rows(pairs)[:120]
    csv_path = tmp_path / "captions.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption"])
        for r in rows:
            writer.writerow([str(pairs.parent / r["path"]), r["full_caption"]])
        for r in rows[:20]:  # a second caption for some images, as in COCO
            writer.writerow([str(pairs.parent / r["path"]), r["caption"]])
    result = evaluate(csv_path, demo_model)
    report = result.report
    assert report["task"] == "retrieval" and report["images"] == 120
    images = [pairs.parent / r["path"] for r in rows]
    captions = list(dict.fromkeys([r["full_caption"] for r in rows] + [r["caption"] for r in rows[:20]]))
    assert report["texts"] == len(captions) and report["pairs"] == 140
    relevant = {i: {captions.index(r["full_caption"])} for i, r in enumerate(rows)}
    for i, r in enumerate(rows[:20]):
        relevant[i].add(captions.index(r["caption"]))
    i2t, t2i = _brute_recall(demo_model.encode_images(images), demo_model.encode_texts(captions), relevant)
    for k in (1, 5, 10):
        assert report["image_to_text"][f"recall@{k}"] == pytest.approx(i2t[k], abs=1e-9)
        assert report["text_to_image"][f"recall@{k}"] == pytest.approx(t2i[k], abs=1e-9)
    assert report["image_to_text"]["recall@10"] > 0.8
    index = write_eval_report(result, tmp_path / "report")
    assert (index.parent / "retrieval.png").read_bytes().startswith(PNG)


def test_folder_dataset_with_display_names(pairs, demo_model, tmp_path):
    rows = _rows(pairs)
    for code, shape in (("sq", "square"), ("ci", "circle")):
        folder = tmp_path / "data" / code
        folder.mkdir(parents=True)
        for r in [r for r in rows if r["shape"] == shape][:12]:
            (folder / Path(r["path"]).name).write_bytes((pairs.parent / r["path"]).read_bytes())
    labels = tmp_path / "labels.txt"
    labels.write_text("# code = what is prompted\nsq = square\nci = circle\nstar\n")
    result = evaluate(tmp_path / "data", demo_model, labels_file=labels, templates="default")
    report = result.report
    assert [(c["label"], c["name"], c["images"]) for c in report["classes"]] == [
        ("sq", "square", 12), ("ci", "circle", 12), ("star", "star", 0)]
    assert report["zero_shot"]["top1"] >= 0.9 and report["chance"] == pytest.approx(1 / 3)
    assert {p["label"] for p in result.predictions} == {"sq", "ci"}
    assert all(p["prediction"] in ("sq", "ci", "star") for p in result.predictions)
    star = [r for r in report["zero_shot"]["per_class"] if r["label"] == "star"][0]
    assert star["images"] == 0 and star["accuracy"] is None


def test_bad_input_names_what_and_where(pairs, demo_model, tmp_path):
    with pytest.raises(UsageError, match="nowhere: no such dataset"):
        evaluate(tmp_path / "nowhere", demo_model)
    no_path = tmp_path / "no_path.csv"
    no_path.write_text("image,label\na.png,cat\n")
    with pytest.raises(DataError, match=r"no_path\.csv:1: header lacks column 'path'"):
        evaluate(no_path, demo_model)
    with pytest.raises(UsageError, match=r"^column: .*pairs\.csv has no column 'kind'") as info:
        evaluate(pairs, demo_model, column="kind")
    assert info.value.parameter == "column"
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(DataError, match=r"empty\.txt: no labels in the file"):
        evaluate(pairs, demo_model, labels_file=empty)
    partial = tmp_path / "partial.txt"
    partial.write_text("circle\nsquare\n")
    with pytest.raises(DataError, match=r"partial\.txt: no line for 3 label\(s\)"):
        evaluate(pairs, demo_model, labels_file=partial, column="shape")
    bad_line = tmp_path / "bad.txt"
    bad_line.write_text("circle\n = round\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: expected LABEL"):
        read_label_names(bad_line)
    with pytest.raises(UsageError, match="unknown template set 'nope'"):
        parse_template_sets("default,nope")
    captions = tmp_path / "captions.csv"
    captions.write_text("path,caption\na.png,a red circle\n")
    with pytest.raises(UsageError, match="^few_shot: few-shot probes are for classification"):
        evaluate(captions, demo_model, few_shot=2)
    with pytest.raises(UsageError, match="^labels_file: a labels file is for classification"):
        evaluate(captions, demo_model, labels_file=partial)


@pytest.mark.slow
def test_eval_command(cli, pairs, tmp_path):
    out = tmp_path / "report"
    proc = cli("eval", str(pairs), "--column", "shape", "--templates", "default,none", "--few-shot", "4",
                "--report", str(out), "--model", "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["task"] == "classification" and data["few_shot"][0]["k"] == 4
    assert data == json.loads((out / "report.json").read_text())
    assert (out / "index.html").is_file() and (out / "few_shot.png").is_file()
    proc = cli("eval", str(tmp_path / "missing.csv"), "--report", str(out), "--model", "demo")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "missing.csv: no such dataset" in proc.stderr


@pytest.mark.slow
def test_eval_report_opens_in_chromium(run, pairs, demo_model, page, tmp_path):
    result, _ = run
    shots = evaluate(pairs, demo_model, column="shape", templates="default,imagenet-7,none", few_shot=[1, 4, 16])
    index = write_eval_report(shots, tmp_path / "report")
    for report_index, shot in ((index, "eval-report.png"), (run[1], "eval-report-30-classes.png")):
        page.errors.clear()
        page.goto(report_index.as_uri())
        page.wait_for_load_state("load")
        assert page.errors == []
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) >= 4 and all(w > 0 for w in widths), widths
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    assert (ARTIFACTS / "eval-report.png").stat().st_size > 10_000
