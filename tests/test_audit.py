"""cliplens audit: a disparity planted through a class name is found, none is reported where none was
planted, class-set shifts, the statistics on synthetic predictions, bad input, and the HTML report."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cliplens.audit import ClassSet, audit, parse_class_set, read_class_set
from cliplens.scores.disparity import ANY_HARMFUL, bootstrap_counts, group_table
from cliplens.inputs.demo_data import BACKGROUNDS, SHAPES as DEMO_SHAPES, random_scene, render_scene
from cliplens.errors import DataError, UsageError
from cliplens.reports import write_audit_report

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"
SHAPES = "# name: shapes\ncircle\nsquare\ntriangle\nstar\ncross\n"
# "black background" is a class name that matches the images of one group (background = black) and no others:
# the disparity is planted through the class names, as a crime-related or non-human class would take some groups.
PLANTED = SHAPES.replace("# name: shapes", "# name: shapes and a background") + "black background [harmful]\n"
TAGS = ("<b>odd</b>", "even & co")  # a group assigned by row number: independent of the images


@pytest.fixture(scope="module")
def audit_csv(tmp_path_factory) -> Path:
    """450 demo images, 30 of each shape on each background (so that, by construction, every background
    holds each shape equally often) and 15 of each with each tag; colour, count and size are random."""
    folder = tmp_path_factory.mktemp("audit-data")
    (folder / "images").mkdir()
    rng = random.Random(4242)
    path = folder / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "background", "size", "tag", "shape"])
        for background in BACKGROUNDS:
            for shape in DEMO_SHAPES:
                for i in range(30):
                    scene = replace(random_scene(rng), shape=shape, background=background)
                    name = f"images/{background}-{shape}-{i:02d}.png"
                    render_scene(scene, rng).save(folder / name)
                    writer.writerow([name, background, scene.size, TAGS[i % 2], shape])
    (folder / "shapes.txt").write_text(SHAPES)
    (folder / "planted.txt").write_text(PLANTED)
    return path


@pytest.fixture(scope="module")
def audited(audit_csv, demo_model):
    folder = audit_csv.parent
    return audit(audit_csv, demo_model, groups=["background", "tag"], classes=folder / "shapes.txt",
                 alt_classes=[folder / "planted.txt"], seed=1)


def _column(class_set: dict, column: str) -> dict:
    return next(c for c in class_set["by_column"] if c["column"] == column)


def test_the_planted_disparity_is_found(audited):
    report = audited.report
    planted = report["class_sets"][1]
    assert planted["name"] == "shapes and a background"
    assert [c["name"] for c in planted["classes"] if c["harmful"]] == ["black background"]
    by_background = _column(planted, "background")
    found = {d["class"]: d for d in by_background["disparities"]}
    d = found["black background"]
    assert d["significant"] and d["harmful"] and d["largest"]["group"] == "black"
    assert d["largest"]["rate"] > 0.15 and d["smallest"]["rate"] == 0.0
    assert d["difference_ci"][0] > 0.05 and d["difference_ci"][0] <= d["difference"] <= d["difference_ci"][1]
    assert d["ratio"] == 0.0
    rates = {g["group"]: {r["class"]: r["rate"] for r in g["rates"]} for g in by_background["rates"]}
    assert rates["black"]["black background"] == d["largest"]["rate"]
    assert rates["white"]["black background"] == rates["gray"]["black background"] == 0.0
    assert any("'black background' (marked harmful)" in line for line in report["summary"])


def test_no_disparity_is_reported_where_none_was_planted(audited):
    report = audited.report
    base = report["class_sets"][0]
    for column in base["by_column"]:  # shapes are drawn independently of background and of the tag
        for d in column["disparities"]:
            assert d["difference_ci"][0] <= 0.0 <= d["difference_ci"][1], (column["column"], d)
            assert not d["significant"]
    for d in _column(report["class_sets"][1], "tag")["disparities"]:  # nor is the planted class tied to the tag
        assert d["difference_ci"][0] <= 0.0 <= d["difference_ci"][1], d
    assert any("no class is predicted at rates that differ" in line for line in report["summary"])
    limits = " ".join(report["limits"])
    for phrase in ("Sample size", "Group labels come from your CSV", "not a cause", "does not show the model is fair"):
        assert phrase in limits


def test_class_set_shift(audited):
    shift = audited.report["shifts"][0]
    assert (shift["from"], shift["to"]) == ("shapes", "shapes and a background")
    rows = {(r["class"], r["group"]): r for r in _column(shift, "background")["rows"]}
    black = rows[("black background", "black")]
    assert black["significant"] and black["before"] == 0.0 and black["after"] > 0.15 and not black["in_base"]
    assert rows[(ANY_HARMFUL, "black")]["after"] == black["after"]
    for group in ("white", "gray"):
        assert rows[("black background", group)]["shift"] == 0.0 and not rows[("black background", group)]["significant"]
    # the images the new class took came from the shapes of that group only
    taken = sum(-rows[(s, "black")]["shift"] for s in ("circle", "square", "triangle", "star", "cross"))
    assert taken == pytest.approx(black["shift"])


def test_predictions_and_reproducibility(audited, audit_csv, demo_model):
    assert len(audited.predictions) == 450
    first = audited.predictions[0]
    assert set(first) == {"path", "background", "tag", "shapes", "shapes and a background"}
    again = audit(audit_csv, demo_model, groups=["background", "tag"], classes=audit_csv.parent / "shapes.txt",
                  alt_classes=[audit_csv.parent / "planted.txt"], seed=1)
    assert again.report["class_sets"] == audited.report["class_sets"]
    assert again.report["shifts"] == audited.report["shifts"]
    assert again.report["images_encoded"] == 0  # the embeddings are cached


def test_intersection_of_groups(audit_csv, demo_model):
    result = audit(audit_csv, demo_model, groups=["background+size"], classes=audit_csv.parent / "planted.txt",
                   bootstrap=2000)
    groups = [g["group"] for g in result.report["groups"][0]["groups"]]
    assert groups == sorted(f"{b} / {s}" for b in ("black", "gray", "white") for s in ("large", "small"))
    column = result.report["class_sets"][0]["by_column"][0]
    assert column["comparisons"] == 15 * 6  # group pairs × classes
    top = max(column["disparities"], key=lambda d: d["difference"])
    assert top["class"] == "black background" and top["largest"]["group"].startswith("black /")


def test_class_file_format(tmp_path):
    cs = parse_class_set("# name: people\n# a comment\nman\nwoman\n\nchild\nthief [harmful]\ngorilla [HARMFUL]\n",
                         "file")
    assert cs.name == "people" and cs.classes == ("man", "woman", "child", "thief", "gorilla")
    assert cs.harmful == {"thief", "gorilla"}
    path = tmp_path / "mine.txt"
    path.write_text("cat\ndog\n")
    assert read_class_set(path).name == "mine" and read_class_set(path).harmful == frozenset()
    with pytest.raises(DataError, match=r"x\.txt: no classes in the file"):
        parse_class_set("# only a comment\n", "x", "x.txt")
    with pytest.raises(DataError, match="only one class"):
        parse_class_set("cat\n", "x", "x.txt")
    with pytest.raises(DataError, match=r"x\.txt:3: class 'cat' is listed twice"):
        parse_class_set("cat\ndog\ncat\n", "x", "x.txt")
    with pytest.raises(DataError, match=r"x\.txt:2: \[harmful\] needs a class name"):
        parse_class_set("cat\n[harmful]\n", "x", "x.txt")


def test_bootstrap_counts_are_a_resampling_of_the_images():
    rng = np.random.default_rng(0)
    cells = np.array([30, 10, 0, 60])
    draws = bootstrap_counts(cells, 20_000, rng)
    assert draws.shape == (20_000, 4) and (draws.sum(axis=1) == 100).all() and (draws[:, 2] == 0).all()
    images = np.repeat(np.arange(4), cells)
    explicit = np.stack([np.bincount(rng.choice(images, 100), minlength=4) for _ in range(20_000)])
    assert np.allclose(draws.mean(axis=0), explicit.mean(axis=0), atol=0.3)
    assert np.allclose(draws.std(axis=0), explicit.std(axis=0), rtol=0.05, atol=0.05)


def test_group_table_on_synthetic_predictions():
    rng = np.random.default_rng(5)
    cs = ClassSet("s", ("a", "b", "c"), frozenset({"c"}))
    groups = np.repeat([0, 1], 200)
    same = rng.choice(3, 400, p=[0.5, 0.3, 0.2])  # the same distribution in both groups
    table = group_table(same, groups, ["g0", "g1"], cs, draws=5000, confidence=0.95, rng=rng)
    assert table["comparisons"] == 3 and not any(d["significant"] for d in table["disparities"])
    skewed = np.where(groups == 0, rng.choice(3, 400, p=[0.5, 0.2, 0.3]), rng.choice(3, 400, p=[0.5, 0.45, 0.05]))
    table = group_table(skewed, groups, ["g0", "g1"], cs, draws=5000, confidence=0.95, rng=rng)
    found = {d["class"]: d for d in table["disparities"]}
    assert found["c"]["significant"] and found["c"]["largest"]["group"] == "g0" and found["c"]["harmful"]
    assert found["b"]["significant"] and found["b"]["largest"]["group"] == "g1"
    assert not found["a"]["significant"]
    assert 0.05 < found["c"]["ratio"] < 0.4 and found["c"]["ratio_ci"][1] < 1.0
    low, high = table["rates"][0]["rates"][2]["ci"]
    assert low < table["rates"][0]["rates"][2]["rate"] < high


def test_bad_input_names_what_and_where(audit_csv, demo_model, tmp_path):
    classes = audit_csv.parent / "shapes.txt"
    with pytest.raises(UsageError, match=r"^groups gender: .*people\.csv has no column 'gender'") as info:
        audit(audit_csv, demo_model, groups=["gender"], classes=classes)
    assert info.value.parameter == "groups"
    with pytest.raises(UsageError, match=r"^groups background\+age: .*people\.csv has no column 'age'"):
        audit(audit_csv, demo_model, groups=["background+age"], classes=classes)
    no_path = tmp_path / "no_path.csv"
    no_path.write_text("image,gender\na.png,f\n")
    with pytest.raises(DataError, match=r"no_path\.csv:1: header lacks the image path column 'path'"):
        audit(no_path, demo_model, groups=["gender"], classes=classes)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.txt: no classes in the file"):
        audit(audit_csv, demo_model, groups=["background"], classes=empty)
    with pytest.raises(UsageError, match=r"^alt_classes .*nope\.txt: no such file"):
        audit(audit_csv, demo_model, groups=["background"], classes=classes, alt_classes=[tmp_path / "nope.txt"])
    with pytest.raises(UsageError, match=r"missing\.csv: no such file"):
        audit(tmp_path / "missing.csv", demo_model, groups=["background"], classes=classes)


@pytest.mark.slow
def test_audit_command(cli, audit_csv, tmp_path):
    folder = audit_csv.parent
    out = tmp_path / "report"
    proc = cli("audit", str(audit_csv), "--group", "background", "--classes", str(folder / "shapes.txt"),
                "--alt-classes", str(folder / "planted.txt"), "--report", str(out), "--model", "demo",
                "--bootstrap", "2000")
    assert proc.returncode == 0, proc.stderr
    assert "'black background' (marked harmful)" in proc.stdout and "disparities" in proc.stdout
    saved = json.loads((out / "report.json").read_text())
    assert saved["format"] == "cliplens-audit/1" and saved["bootstrap"] == 2000
    assert {"index.html", "predictions.csv", "rates-s0-c0.png"} <= set(saved["files"])
    proc = cli("audit", str(audit_csv), "--group", "gender", "--classes", str(folder / "shapes.txt"),
                "--report", str(out), "--model", "demo")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no column 'gender'" in proc.stderr
    assert proc.stderr.startswith("error: --group gender: ")
    proc = cli("audit", str(audit_csv), "--group", "background", "--classes", str(folder / "shapes.txt"),
               "--report", str(out), "--model", "demo")
    assert proc.returncode == 2 and "already holds files" in proc.stderr and "(pass --overwrite)" in proc.stderr


@pytest.mark.slow
def test_audit_report_opens_in_chromium(audited, page, tmp_path):
    index = write_audit_report(audited, tmp_path / "report")
    html = index.read_text()
    assert "<b>odd</b>" not in html and "&lt;b&gt;odd&lt;/b&gt;" in html and "even &amp; co" in html
    assert "What this audit can and cannot show" in html and 'class="harmful"' in html
    page.goto(index.as_uri())
    page.wait_for_load_state("load")
    assert page.errors == []
    widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == len([f for f in audited.report["files"] if f.endswith(".png")]) >= 6
    assert all(w > 0 for w in widths), widths
    assert page.locator("b", has_text="odd").count() == 0  # the group name shows as text, not markup
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "audit-report.png"), full_page=True)
