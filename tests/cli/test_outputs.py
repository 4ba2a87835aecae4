"""One output policy for every command: outputs are checked before any work (no model loads), an output that
exists is replaced only with --overwrite, and the folder a file goes into must exist."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import cliplens
from cliplens.cli import app
from cliplens.inputs.demo_data import write_demo_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    write_demo_data(root / "demo", 12, seed=5)
    (root / "full").mkdir()
    (root / "full" / "old.txt").write_text("keep me")
    (root / "old.csv").write_text("keep me")
    (root / "people.csv").write_text("path,group\n" + "".join(f"demo/images/000/{i:07d}.png,g{i % 2}\n"
                                                            for i in range(12)))
    (root / "classes.txt").write_text("circle\nsquare\n")
    image = next((root / "demo" / "images").rglob("*.png"))
    return root, image


def _commands(root, image):
    pairs, full, old = root / "demo" / "pairs.csv", root / "full", root / "old.csv"
    missing = root / "nowhere"
    return [
        (["classify", image, "a", "b", "-o", missing / "x.csv"], "--output", "does not exist"),
        (["classify", image, "a", "b", "-o", old], "--output", "already exists"),
        (["calibrate", pairs, "--out", missing / "c.json"], "--out", "does not exist"),
        (["embed", image, "--out", full], "--out", "already holds files"),
        (["score", pairs, "-o", old], "--output", "already exists"),
        (["rank", "a circle", image, "--copy-to", full], "--copy-to", "already holds files"),
        (["eval", pairs, "--column", "shape", "--report", full], "--report", "already holds files"),
        (["audit", root / "people.csv", "--group", "group", "--classes", root / "classes.txt", "--report", full],
         "--report", "already holds files"),
        (["dream", "a circle", "--out", missing / "x.png"], "--out", "does not exist"),
        (["dream", "a circle", "--out", root / "x.png", "--frames", full], "--frames", "already holds files"),
        (["banks", "calibrate", "demo_shapes", pairs, "--column", "shape", "--out", old], "--out", "already exists"),
        (["train", pairs, "--out", full], "--out", "already holds files"),
        (["demo-data", "--out", full], "--out", "already holds files"),
        (["index", "--export", full], "--export", "already holds files"),
    ]


@pytest.mark.parametrize("case", range(14))
def test_outputs_are_checked_before_any_work(case, data, monkeypatch):
    root, image = data
    args, flag, reason = _commands(root, image)[case]

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(cliplens, "load_model", no_model)
    result = CliRunner().invoke(app, [str(a) for a in args] + ["--model", "demo"] * (args[0] not in (
        "demo-data", "train", "index")))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} ") and reason in lines[0], result.stderr
    if reason != "does not exist":
        assert lines[0].endswith("(pass --overwrite)")
    assert (root / "full" / "old.txt").read_text() == "keep me" and (root / "old.csv").read_text() == "keep me"
    assert not (root / "nowhere").exists()


def test_every_output_option_is_covered(data):
    """Each command with an output option appears above (a new output must be added to the list)."""
    root, image = data
    covered = {args[0] if args[0] != "banks" else "banks calibrate" for args, _, _ in _commands(root, image)}
    assert covered == {"classify", "calibrate", "embed", "score", "rank", "eval", "audit", "dream",
                       "banks calibrate", "train", "demo-data", "index"}


def test_unwritable_folder_is_refused_before_work(data, monkeypatch):
    """A folder that cannot be written is found by writing a probe file there (root ignores permission bits,
    so /proc, which no one can write, stands in for a read-only share)."""
    _, image = data
    monkeypatch.setattr(cliplens, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    for args in (["classify", str(image), "a", "b", "-o", "/proc/cliplens-test.csv"],
                 ["embed", str(image), "--out", "/proc/cliplens-test"]):
        result = CliRunner().invoke(app, args + ["--model", "demo"])
        assert result.exit_code == 2 and "cannot write in /proc" in result.stderr, result.stderr
