"""One output policy for every command: outputs are checked before any work (no model loads), an output that
exists is replaced only with --overwrite, and the folder a file goes into must exist."""

from __future__ import annotations

import re

import pytest
import typer
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
    (root / "old.gif").write_text("keep me")
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
        (["dream", "a circle", "--out", root / "x.png", "--gif", old], "--gif", "give a .gif file name"),
        (["dream", "a circle", "--out", root / "x.png", "--gif", root / "old.gif"], "--gif", "already exists"),
        (["banks", "calibrate", "demo_shapes", pairs, "--column", "shape", "--out", old], "--out", "already exists"),
        (["train", pairs, "--out", full], "--out", "already holds files"),
        (["demo-data", "--out", full], "--out", "already holds files"),
        (["index", "--export", full], "--export", "already holds files"),
        (["merge", root / "demo", "--out", full], "--out", "already holds files"),
    ]


CASES = 17


@pytest.mark.parametrize("case", range(CASES))
def test_outputs_are_checked_before_any_work(case, data, monkeypatch):
    root, image = data
    args, flag, reason = _commands(root, image)[case]

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(cliplens, "load_model", no_model)
    result = CliRunner().invoke(app, [str(a) for a in args] + ["--model", "demo"] * (args[0] not in (
        "demo-data", "train", "index", "merge")))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag} ") and reason in lines[0], result.stderr
    if reason == "already exists" or reason == "already holds files":
        assert lines[0].endswith("(pass --overwrite)")
    for kept in (root / "full" / "old.txt", root / "old.csv", root / "old.gif"):
        assert kept.read_text() == "keep me"
    assert not (root / "nowhere").exists()


#: How the CLI names the parameters of outputs (``out``, ``out_file``, ``output``, ``copy_to``, ...).
OUTPUT_PARAMETER = re.compile(r"^(out|output|report|copy_to|export|gif|frames)(_|$)")


def _output_options(group, path=()) -> set[tuple[str, str]]:
    """(command, long flag) of every output option of every command, found in the commands themselves."""
    found = set()
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found |= _output_options(command, (*path, name))
            continue
        for param in command.params:
            if OUTPUT_PARAMETER.match(param.name or ""):
                found.add((" ".join((*path, name)), next(o for o in param.opts if o.startswith("--"))))
    return found


def test_every_output_option_is_covered(data):
    """Every output option of every command (found by walking the commands, so a new one is caught) has a case
    above."""
    root, image = data
    cases = _commands(root, image)
    assert len(cases) == CASES
    covered = {(" ".join(args[:2]) if args[0] == "banks" else str(args[0]), flag) for args, flag, _ in cases}
    found = _output_options(typer.main.get_command(app))
    assert {("dream", "--gif"), ("rank", "--copy-to"), ("index", "--export")} <= found  # the walk finds them
    assert found == covered


def test_unwritable_folder_is_refused_before_work(data, monkeypatch):
    """A folder that cannot be written is found by writing a probe file there (root ignores permission bits,
    so /proc, which no one can write, stands in for a read-only share)."""
    _, image = data
    monkeypatch.setattr(cliplens, "load_model", lambda *a, **k: pytest.fail("the model loaded first"))
    for args in (["classify", str(image), "a", "b", "-o", "/proc/cliplens-test.csv"],
                 ["embed", str(image), "--out", "/proc/cliplens-test"]):
        result = CliRunner().invoke(app, args + ["--model", "demo"])
        assert result.exit_code == 2 and "cannot write in /proc" in result.stderr, result.stderr


def test_dedupe_refuses_the_thresholds_the_library_refuses(data):
    """The CLI's range for --threshold is the library's, (0, 1]: 0 is refused at once, 1 is taken."""
    result = CliRunner().invoke(app, ["dedupe", "--threshold", "0", "--index", str(data[0] / "no-index")])
    assert result.exit_code == 2 and "--threshold" in result.output and "above 0" in result.output, result.output
    result = CliRunner().invoke(app, ["dedupe", "--threshold", "1", "--index", str(data[0] / "no-index")])
    assert result.exit_code == 2 and "no index here" in result.stderr, result.output  # past the range check
