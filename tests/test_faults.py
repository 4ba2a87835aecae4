"""Fault injection: each fault happens for real (odd names on disk, unreadable and read-only folders, bytes
overwritten in index files, damaged models, closed pipes, hostile requests), and each command answers with
one line naming what and where, its documented exit code, no traceback, and nothing lost that was done.

Permission faults need a process that permission bits apply to: as root, the command runs without the
capabilities that let root ignore them (``setpriv``); as anyone else, as it is.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cliplens
from cliplens.index.photos import complete_linkage
from cliplens.index.store import IndexStore
from cliplens.inputs.demo_data import generate, write_demo_data

from conftest import run_cli

ODD = os.fsdecode(b"bad\xff\xfename.png")  # a file name that is not UTF-8, as old disks and shares have
ODD_SHOWN = "bad\\xff\\xfename.png"  # how cliplens prints and writes it
LABELS = ("red circle", "blue square", "green triangle")


def _unprivileged(*args, **kwargs) -> subprocess.CompletedProcess:
    """``cliplens ARGS`` in a process that file permissions apply to (root without its override capabilities)."""
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}
    return subprocess.run([*prefix, sys.executable, "-m", "cliplens.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300, **kwargs)


def _unprivileged_python(code: str, *args) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` in a process that file permissions apply to."""
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def _one_line(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The command's only line on stderr (checked for the exit code, the words and no traceback)."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith(("error:", "warning:"))]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def photos(tmp_path) -> Path:
    """Ten demo images in a folder (and its sub-folder 000)."""
    write_demo_data(tmp_path / "demo", 10, seed=17)
    return tmp_path / "demo" / "images"


# --- files and folders ----------------------------------------------------------------------------------

def test_a_file_name_that_is_not_utf8_is_processed_like_any_other(photos, tmp_path):
    first = sorted((photos / "000").iterdir())[0]
    shutil.copy(first, photos / "000" / ODD)
    index = tmp_path / "index"
    proc = run_cli("index", photos, "--index", index, "--model", "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["encoded"] == 11
    found = run_cli("search", "--image", photos / "000" / ODD, "--index", index, "-k", "2", "--json")
    assert found.returncode == 0 and ODD_SHOWN in {Path(r["path"]).name for r in json.loads(found.stdout)["results"]}
    assert ODD_SHOWN in run_cli("search", "--image", photos / "000" / ODD, "--index", index, "-k", "2").stdout

    for out in (tmp_path / "out.csv", tmp_path / "out.jsonl"):
        proc = run_cli("classify", photos, *LABELS, "--model", "demo", "-o", out)
        assert proc.returncode == 0, proc.stderr
        text = out.read_bytes().decode("utf-8")  # strictly valid UTF-8
        if out.suffix == ".csv":
            names = [Path(row["image"]).name for row in csv.DictReader(text.splitlines())]
        else:
            names = [Path(json.loads(line)["image"]).name for line in text.splitlines()]
        assert len(names) == 11 and ODD_SHOWN in names

    proc = run_cli("embed", photos, "--out", tmp_path / "emb", "--model", "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    import pyarrow.parquet as pq

    paths = pq.read_table(tmp_path / "emb" / "metadata" / "metadata_0.parquet").to_pydict()["image_path"]
    assert len(paths) == 11 and ODD_SHOWN in {Path(p).name for p in paths}
    assert np.load(tmp_path / "emb" / "img_emb" / "img_emb_0.npy").shape[0] == 11


def test_unreadable_folders_are_reported_like_bad_files_and_lose_nothing(photos, tmp_path):
    locked = photos / "locked"
    locked.mkdir()
    shutil.copy(sorted((photos / "000").iterdir())[0], locked / "hidden.png")
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0  # 11 files, all readable
    locked.chmod(0)
    try:
        proc = _unprivileged("classify", photos, *LABELS, "--model", "demo", "--format", "jsonl")
        assert proc.returncode == 1, proc.stderr
        assert f"skipped {locked}: folder unreadable (Permission denied)" in proc.stderr
        assert len(proc.stdout.splitlines()) == 10  # the readable images are all classified
        again = _unprivileged("index", photos, "--index", index, "--json")
        assert again.returncode == 1 and "locked: folder unreadable" in again.stderr
        assert json.loads(again.stdout)["removed"] == 0  # the hidden file keeps its row: nothing is lost
        with sqlite3.connect(index / "index.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM files WHERE vector IS NOT NULL").fetchone()[0] == 11
        _one_line(_unprivileged("classify", locked, *LABELS, "--model", "demo"), 2, "folder unreadable")
    finally:
        locked.chmod(0o755)


def test_damaged_models_and_bad_devices_are_named(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(cliplens.resolve_model_dir("demo"), model)
    image = Path(cliplens.__file__).parent / "examples" / "blue-star.png"
    (model / "config.json").write_text("{not json")
    _one_line(run_cli("classify", image, *LABELS, "--model", model), 2, "--model", "config.json is damaged")
    shutil.copy(cliplens.resolve_model_dir("demo") / "config.json", model / "config.json")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    _one_line(run_cli("classify", image, *LABELS, "--model", model), 2, "model.safetensors: damaged or truncated")
    _one_line(run_cli("classify", image, *LABELS, "--model", "demo", "--device", "banana"), 2,
              "--device banana: not a device")


def test_an_index_that_cannot_be_made_or_read_is_named(photos, tmp_path):
    parent = tmp_path / "readonly"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        _one_line(_unprivileged("index", photos, "--index", parent / "new", "--model", "demo"), 2,
                  "--index", "cannot make the index folder")
    finally:
        parent.chmod(0o755)
    index = tmp_path / "index"
    index.mkdir()
    (index / "index.sqlite").write_bytes(b"this is not a database " * 500)
    line = _one_line(run_cli("search", "a red circle", "--index", index), 2, "index.sqlite", "damaged")
    assert "cliplens index FOLDER --rebuild" in line
    _one_line(run_cli("index", photos, "--index", index, "--model", "demo"), 2, "(pass --rebuild)")
    proc = run_cli("index", photos, "--index", index, "--model", "demo", "--rebuild", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["recovered"]["kept"] == 0 and "rebuilt the index" in proc.stderr
    assert any(p.name.startswith("index.sqlite.damaged-") for p in index.iterdir())  # moved aside, not deleted
    assert run_cli("search", "a red circle", "--index", index, "--json").returncode == 0


def test_rebuild_keeps_the_rows_a_partly_damaged_store_still_has(tmp_path):
    write_demo_data(tmp_path / "many", 300, seed=23)
    photos, index = tmp_path / "many" / "images", tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0
    database = index / "index.sqlite"
    data = bytearray(database.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle + 8 : middle + page] = b"\xa5" * (page - 8)  # one table page in the middle, overwritten
    database.write_bytes(bytes(data))
    proc = run_cli("index", photos, "--index", index, "--model", "demo", "--rebuild", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["recovered"]["kept"] > 200 and report["recovered"]["lost"] >= 0
    assert report["unchanged"] == report["recovered"]["kept"]  # the rows kept need no model run
    assert report["encoded"] == 300 - report["recovered"]["kept"]  # the lost ones are encoded again
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM files WHERE vector IS NOT NULL").fetchone()[0] == 300


def test_a_closed_stdout_ends_commands_quietly(photos, tmp_path):
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0
    for args in (["dedupe", "--index", index, "--threshold", "0.3"],
                 ["classify", photos, *LABELS, "--model", "demo", "--format", "csv"],
                 ["search", "a red circle", "--index", index, "-k", "10"]):
        proc = subprocess.Popen([sys.executable, "-m", "cliplens.cli", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        proc.stdout.read(8)  # `| head -c 8`
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 0, (args[0], stderr)
        assert "Traceback" not in stderr and "Broken" not in stderr and "error" not in stderr.lower(), stderr


STRICT = {"PYTHONIOENCODING": "utf-8:strict"}  # stdout as a UTF-8 terminal or pipe takes it: no lone surrogates
WEIRD = (os.fsdecode(b"caf\xff [old photos]"), "a[", "x]")  # not UTF-8, a bracketed word, and "[/x]" in the path


def _weird(root: Path) -> Path:
    """A folder under ``root`` whose path is not UTF-8 and reads as markup (``caf\\xff [old photos]/a[/x]``)."""
    folder = root.joinpath(*WEIRD)
    folder.mkdir(parents=True)
    return folder


def _shown(path: Path) -> str:
    """How cliplens prints ``path``: its bytes that are not UTF-8 escaped."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def test_outputs_with_odd_names_are_printed_whole_and_escaped(photos, tmp_path):
    """Under a strict UTF-8 stdout, every command prints and reports the outputs it wrote (text and JSON) with
    odd bytes escaped and brackets kept: nothing fails at the end, nothing vanishes as markup."""
    out = _weird(tmp_path)
    shown = _shown(out)
    assert shown.endswith("caf\\xff [old photos]/a[/x]")
    proc = run_cli("dream", "a red circle", "--out", out / "d.png", "--frames", out / "frames", "--gif", out / "d.gif",
                   "--steps", "3", "--model", "demo", "-l", "red circle", "-l", "blue square", "--json", env=STRICT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["out"], data["frames"], data["gif"]) == (f"{shown}/d.png", f"{shown}/frames", f"{shown}/d.gif")
    assert data["classification"]["image"] == f"{shown}/d.png"
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"0000{i}.png" for i in range(4)]
    proc = run_cli("dream", "a red circle", "--out", out / "e.png", "--frames", out / "more", "--steps", "2",
                   "--model", "demo", env=STRICT)
    assert proc.returncode == 0 and proc.stdout.startswith(f"{shown}/e.png: similarity"), proc.stderr
    assert f"frames → {shown}/more" in proc.stderr

    proc = run_cli("classify", photos, *LABELS, "--model", "demo", "-o", out / "c.csv", env=STRICT)
    assert proc.returncode == 0 and f"→ {shown}/c.csv" in proc.stderr, proc.stderr
    proc = run_cli("rank", "a red circle", photos, "--copy-to", out / "best", "-k", "2", "--model", "demo", env=STRICT)
    assert proc.returncode == 0 and f"copied 2 image(s) → {shown}/best" in proc.stderr, proc.stderr
    proc = run_cli("embed", photos, "--out", out / "emb", "--model", "demo", env=STRICT)
    assert proc.returncode == 0 and f"→ {shown}/emb" in proc.stderr, proc.stderr
    proc = run_cli("embed", photos, "--out", out / "emb", "--overwrite", "--model", "demo", "--json", env=STRICT)
    data = json.loads(proc.stdout)
    assert data["out"] == f"{shown}/emb" and data["files"] and all(f.startswith(shown) for f in data["files"])

    index = out / "index"
    proc = run_cli("index", photos, "--index", index, "--model", "demo", env=STRICT)
    assert proc.returncode == 0 and f"→ {shown}/index" in proc.stderr, proc.stderr
    proc = run_cli("index", photos, "--index", index, "--json", env=STRICT)
    assert json.loads(proc.stdout)["index"] == f"{shown}/index"
    proc = run_cli("index", "--index", index, "--export", out / "exp", env=STRICT)
    assert proc.returncode == 0 and f"→ {shown}/exp" in proc.stderr, proc.stderr
    proc = run_cli("index", "--index", index, "--export", out / "exp", "--overwrite", "--json", env=STRICT)
    data = json.loads(proc.stdout)
    assert data["out"] == f"{shown}/exp" and all(f.startswith(f"{shown}/exp/") for f in data["files"])
    proc = run_cli("index", "--index", out / "index2", "--import", out / "exp", "--model", "demo", env=STRICT)
    assert proc.returncode == 0 and f"imported 10 vectors from {shown}/exp" in proc.stderr, proc.stderr
    query = out / "q.png"
    shutil.copy(next(photos.rglob("*.png")), query)
    proc = run_cli("search", "--image", query, "--index", index, "-k", "1", "--json", env=STRICT)
    assert proc.returncode == 0 and json.loads(proc.stdout)["query"] == f"{shown}/q.png", proc.stderr

    data_dir = tmp_path / "cal"
    for i, sample in enumerate(generate(30, seed=71)):
        folder = data_dir / (os.fsdecode(b"\xff") + sample.scene.shape)
        folder.mkdir(parents=True, exist_ok=True)
        sample.image.save(folder / f"{i}.png")
    proc = run_cli("calibrate", data_dir, "--model", "demo", "--out", out / "cal.json", "--json", env=STRICT)
    assert proc.returncode == 0 and json.loads(proc.stdout)["out"] == f"{shown}/cal.json", proc.stderr
    assert all(c.startswith("\\xff") for c in json.loads((out / "cal.json").read_bytes())["classes"])
    proc = run_cli("eval", data_dir, "--report", out / "report", "--templates", "default", "--model", "demo",
                   env=STRICT)
    assert proc.returncode == 0 and f"report → {shown}/report/index.html" in proc.stderr, proc.stderr


def test_eval_and_audit_report_classes_and_datasets_with_odd_names(photos, tmp_path):
    """Class folders, datasets and class files named in bytes that are not UTF-8, or with brackets: the run
    ends with its report (JSON, CSV and HTML, all valid UTF-8) and prints them escaped and whole."""
    dataset = tmp_path / os.fsdecode(b"set\xff")
    for i, image in enumerate(sorted(photos.rglob("*.png"))):
        folder = dataset / (os.fsdecode(b"caf\xff") if i % 2 else "[old photos]")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / f"{i}.png")
    report = tmp_path / "eval"
    proc = run_cli("eval", dataset, "--report", report, "--templates", "default", "--model", "demo", env=STRICT)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((report / "report.json").read_bytes().decode("utf-8"))
    assert {c["label"] for c in saved["classes"]} == {"caf\\xff", "[old photos]"}
    assert saved["dataset"] == _shown(dataset) and "set\\xff" in proc.stdout
    assert "[old photos]" in proc.stdout and "caf\\xff" in proc.stdout
    rows = list(csv.DictReader((report / "predictions.csv").read_bytes().decode("utf-8").splitlines()))
    assert len(rows) == 10 and {r["label"] for r in rows} == {"caf\\xff", "[old photos]"}
    assert "caf\\xff" in (report / "index.html").read_bytes().decode("utf-8")

    folder = tmp_path / os.fsdecode(b"aud\xffit")
    (folder / "img").mkdir(parents=True)
    with open(folder / os.fsdecode(b"pe\xffople.csv"), "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "group"])
        for i, image in enumerate(sorted(photos.rglob("*.png"))):
            shutil.copy(image, folder / "img" / f"{i}.png")
            writer.writerow([f"img/{i}.png", "[odd]" if i % 2 else "even"])
    classes = folder / os.fsdecode(b"cl\xffasses.txt")
    classes.write_text("red circle\nblue square\ngreen triangle [harmful]\n")
    report = tmp_path / "audit"
    proc = run_cli("audit", folder / os.fsdecode(b"pe\xffople.csv"), "--group", "group", "--classes", classes,
                   "--report", report, "--bootstrap", "200", "--model", "demo", env=STRICT)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((report / "report.json").read_bytes().decode("utf-8"))
    assert saved["dataset"].endswith("aud\\xffit/pe\\xffople.csv")
    assert saved["class_sets"][0]["name"] == "cl\\xffasses" and repr("cl\\xffasses") in proc.stdout  # quoted
    rows = list(csv.DictReader((report / "predictions.csv").read_bytes().decode("utf-8").splitlines()))
    assert len(rows) == 10 and all("aud\\xffit/img/" in r["path"] for r in rows) and "cl\\xffasses" in rows[0]
    assert "cl\\xffasses" in (report / "index.html").read_bytes().decode("utf-8")


def test_a_model_whose_folder_holds_a_file_named_oddly_loads(tmp_path):
    """Every file of a model folder is hashed by name and content (to key its caches): an odd name is hashed
    as its bytes. (The folder itself must have a UTF-8 name: safetensors cannot open any other.)"""
    model = tmp_path / "model [v2]"
    shutil.copytree(cliplens.resolve_model_dir("demo"), model)
    (model / os.fsdecode(b"notes\xff.txt")).write_text("kept beside the weights")  # hashed with the model's files
    image = Path(cliplens.__file__).parent / "examples" / "blue-star.png"
    proc = run_cli("classify", image, *LABELS, "--model", model, "--json", env=STRICT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == str(model)


def test_an_output_folder_that_cannot_be_listed_is_refused(tmp_path):
    """A report folder that can be written but not listed: the output check says so (an OutputError naming
    the parameter), as for any output that cannot be used, before any work."""
    blind = tmp_path / "blind"
    blind.mkdir()
    (blind / "old.json").write_text("keep me")
    blind.chmod(0o300)  # can be written and entered, not listed
    check = ("import sys, cliplens\n"
             "try:\n    cliplens.check_output_folder(sys.argv[1], parameter='report')\n"
             "except cliplens.OutputError as exc:\n    print(exc)\n")
    try:
        proc = _unprivileged_python(check, blind)
    finally:
        blind.chmod(0o755)
    assert proc.returncode == 0 and proc.stdout == f"report {blind}: cannot list it (Permission denied)\n", proc
    assert (blind / "old.json").read_text() == "keep me"


def _interruptible() -> None:
    """In the child: SIGINT as a terminal gives it. A test run may have left this process ignoring SIGINT, and a
    child inherits that (as a job started with `&` does, by design)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def test_an_interrupted_classify_leaves_no_half_written_file(tmp_path):
    """-o FILE is written under a temporary name: while the run goes, FILE is not there; Ctrl-C leaves neither."""
    write_demo_data(tmp_path / "many", 3000, seed=29)
    out = tmp_path / "results.csv"
    proc = subprocess.Popen([sys.executable, "-m", "cliplens.cli", "classify", str(tmp_path / "many" / "images"),
                             *LABELS, "--model", "demo", "--batch-size", "8", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            preexec_fn=_interruptible)
    try:
        deadline = time.monotonic() + 120

        def rows_written() -> int:  # rows, not only the header: the run is classifying, past the model's loading
            paths = list(tmp_path.glob(".results.csv.*.tmp"))
            try:
                return sum(len(path.read_bytes().splitlines()) - 1 for path in paths)
            except FileNotFoundError:  # renamed as the run ended
                return 0

        while rows_written() < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rows_written() >= 8, "the rows go to a temporary file first"
        assert not out.exists()  # a reader never sees a half-written results.csv
        stderr = None
        for _ in range(3):  # Ctrl-C, and again if the run goes on
            proc.send_signal(signal.SIGINT)
            try:
                stderr = proc.communicate(timeout=5)[1].decode()
                break
            except subprocess.TimeoutExpired:
                continue
        if stderr is None:
            stderr = proc.communicate(timeout=120)[1].decode()
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert not out.exists() and not list(tmp_path.glob(".results.csv.*")), list(tmp_path.iterdir())


def test_a_copy_or_frame_that_fails_midway_leaves_no_half_file(photos, tmp_path, monkeypatch, demo_model):
    """A disk that fills up in the middle of a file: the file is not left half-written under its name."""
    ranking = cliplens.rank_images("a red circle", sorted(photos.rglob("*.png")), demo_model, top=3)
    real_copy = shutil.copy2
    copies = []

    def copy_then_fill_the_disk(source, target, **kwargs):
        copies.append(target)
        if len(copies) == 2:
            Path(target).write_bytes(Path(source).read_bytes()[:100])  # half the file, then the disk is full
            raise OSError(28, "No space left on device")
        return real_copy(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copy2", copy_then_fill_the_disk)
    with pytest.raises(OSError, match="No space left"):
        cliplens.copy_ranked(ranking, tmp_path / "best")
    assert [p.name for p in (tmp_path / "best").iterdir()] == [f"001_{Path(ranking.results[0].path).name}"]

    from PIL import Image

    real_save = Image.Image.save
    saved = []

    def save_then_fill_the_disk(image, fp, *args, **kwargs):
        saved.append(fp)
        if len(saved) == 2:
            fp.write(b"\x89PNG half")
            raise OSError(28, "No space left on device")
        return real_save(image, fp, *args, **kwargs)

    from typer.testing import CliRunner

    from cliplens.cli import app

    monkeypatch.setattr(Image.Image, "save", save_then_fill_the_disk)
    result = CliRunner().invoke(app, ["dream", "a red circle", "--out", str(tmp_path / "d.png"), "--frames",
                                      str(tmp_path / "frames"), "--steps", "3", "--model", "demo"])
    assert result.exit_code == 2 and "No space left" in result.stderr, result.output
    assert [p.name for p in (tmp_path / "frames").iterdir()] == ["00000.png"]  # whole frames only
    with Image.open(tmp_path / "frames" / "00000.png") as frame:
        frame.load()


# --- the index -------------------------------------------------------------------------------------------

def test_a_damaged_vector_index_is_caught_and_rebuilt(photos, tmp_path):
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0
    vectors = index / "vectors.faiss"
    data = bytearray(vectors.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 512] = b"\x7f" * 512  # overwritten in place: same size, wrong bytes
    vectors.write_bytes(bytes(data))
    proc = run_cli("search", "a red circle", "--index", index, "--json")
    assert proc.returncode == 0, proc.stderr
    assert all(-1.0 <= r["similarity"] <= 1.0 for r in json.loads(proc.stdout)["results"])
    _one_line(proc, 0, "did not match its checksum", "rebuilt from the database")
    dupes = json.loads(run_cli("dedupe", "--index", index, "--threshold", "0.99", "--json").stdout)
    assert all(len(g["paths"]) < 10 for g in dupes["groups"])
    vectors.write_bytes(bytes(data))  # damaged again: an index run repairs the saved files too
    assert run_cli("index", photos, "--index", index).returncode == 0
    clean = run_cli("search", "a red circle", "--index", index)
    assert clean.returncode == 0 and "checksum" not in clean.stderr


def test_a_read_only_index_can_be_searched_but_not_updated(photos, tmp_path):
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0
    for path in [index, *index.iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        found = _unprivileged("search", "a red circle", "--index", index, "-k", "3", "--json")
        assert found.returncode == 0, found.stderr
        assert len(json.loads(found.stdout)["results"]) == 3
        assert _unprivileged("dedupe", "--index", index, "--json").returncode == 0
        _one_line(_unprivileged("index", photos, "--index", index), 2, "--index", "read-only",
                  "indexing needs write access")
    finally:
        for path in [index, *index.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_duplicate_groups_hold_only_files_that_are_all_alike():
    """A chain a ~ b ~ c whose ends are not alike is not one group, and a group's score is its least pair."""
    angle = np.radians([0.0, 20.0, 40.0, 90.0])  # cos 20° = 0.94, cos 40° = 0.77
    vectors = np.stack([np.cos(angle), np.sin(angle), np.zeros(4)], axis=1).astype(np.float32)
    groups = complete_linkage(vectors, 0.9)
    assert groups in ([[0, 1]], [[1, 2]])
    for group in groups:
        sims = vectors[group] @ vectors[group].T
        assert sims[np.triu_indices(len(group), 1)].min() >= 0.9


def test_dedupe_reports_the_true_least_similarity_of_each_group(photos, tmp_path):
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0
    photo_index = cliplens.PhotoIndex(index)
    try:
        groups = photo_index.dedupe(0.5)
        ids, vectors = photo_index.store.vectors()
        by_path = {p: vectors[n] for n, p in enumerate(photo_index.store.paths(ids)[int(i)] for i in ids)}
    finally:
        photo_index.close()
    assert groups, "the demo images have look-alikes at 0.5"
    for group in groups:
        members = np.stack([by_path[p] for p in group.paths])
        sims = members @ members.T
        lowest = sims[np.triu_indices(len(members), 1)].min()
        assert lowest >= 0.5 and group.score == pytest.approx(float(lowest), abs=1e-6)


def test_rebuild_drops_vectors_that_no_known_model_made(photos, tmp_path):
    """A damaged database whose model binding cannot be read: its vectors could be any model's, so the rebuild
    keeps none of them and encodes every file again with the model asked for."""
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0
    database = index / "index.sqlite"
    db = sqlite3.connect(database)
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray(database.read_bytes())
    data[(page - 1) * size : page * size] = b"\xa5" * size  # the meta table's page, overwritten
    database.write_bytes(bytes(data))
    _one_line(run_cli("index", photos, "--index", index, "--model", "demo"), 2, "damaged", "(pass --rebuild)")
    proc = run_cli("index", photos, "--index", index, "--model", "demo", "--rebuild", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["recovered"]["kept"] == 0 and report["recovered"]["lost"] == 10 and report["encoded"] == 10
    with sqlite3.connect(database) as db:
        assert dict(db.execute("SELECT key, value FROM meta WHERE key IN ('model', 'dim')")) == {"model": "demo",
                                                                                                "dim": "128"}
        assert db.execute("SELECT COUNT(*) FROM files WHERE vector IS NOT NULL").fetchone()[0] == 10


def test_a_file_deleted_while_indexing_is_gone_not_an_error(photos, tmp_path, monkeypatch, demo_model):
    """Files listed, then deleted before the run looks at them (a sync client, a camera import): the run
    goes on, and a file the index held leaves it as any deleted file does."""
    from cliplens.index import indexer

    index = tmp_path / "index"
    first = cliplens.update_index([photos], index, demo_model.name, backend="torch")
    assert first.encoded == 10
    real_expand = indexer.expand_paths
    victims = sorted(photos.rglob("*.png"))[:2]

    def list_then_delete(*args, **kwargs):
        listed = real_expand(*args, **kwargs)
        for victim in victims:
            victim.unlink()  # gone between the listing and the look at each file
        return listed

    monkeypatch.setattr(indexer, "expand_paths", list_then_delete)
    run = cliplens.update_index([photos], index, demo_model.name, backend="torch")
    assert run.failed == 0 and run.errors == [] and (run.files, run.unchanged, run.removed) == (8, 8, 2)
    store = IndexStore(index)
    try:
        assert not any(p.endswith(tuple(v.name for v in victims)) for p in store.rows())
    finally:
        store.close()


def test_import_then_index_in_one_run_prints_one_json_object(photos, tmp_path):
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0
    assert run_cli("index", "--index", index, "--export", tmp_path / "exp").returncode == 0
    more = tmp_path / "more"
    write_demo_data(more, 3, seed=41)
    proc = run_cli("index", "--index", tmp_path / "fresh", "--import", tmp_path / "exp", more, "--model", "demo",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # one object: the import and the run
    assert report["imported"] == 10 and report["encoded"] == 3 and report["files"] == 3


def test_a_search_index_that_cannot_be_opened_closes_its_database(photos, tmp_path, tiny_clip_dir):
    index = tmp_path / "index"
    assert run_cli("index", photos, "--index", index, "--model", "demo").returncode == 0

    def open_files() -> int:
        fds = Path("/proc/self/fd")
        return sum(1 for fd in fds.iterdir() if os.path.realpath(fd).startswith(str(index / "index.sqlite")))

    before = open_files()
    with pytest.raises(cliplens.ModelMismatchError) as refused:
        cliplens.PhotoIndex(index, str(tiny_clip_dir))  # another model than the index's: refused in __init__
    assert refused.value.parameter == "model" and open_files() == before  # nothing left open


# --- models ----------------------------------------------------------------------------------------------

def test_a_full_gpu_is_not_reported_as_damaged_files(monkeypatch):
    """Moving a sound model to a device that has no room fails as that, never as a damaged checkpoint."""
    torch = pytest.importorskip("torch")
    from cliplens.models.hf import TransformersEncoder

    def no_room(module, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(torch.nn.Module, "to", no_room)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        TransformersEncoder(cliplens.resolve_model_dir("demo"), name="demo", device="cpu")


# --- set-up ----------------------------------------------------------------------------------------------

def test_make_test_gets_its_browser_or_says_how_in_one_line(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "get-browser"
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    found = subprocess.run([script, tmp_path / "no-venv"], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "CLIPLENS_CHROMIUM": str(fake)})
    assert found.returncode == 0 and found.stderr == ""
    bin_dir = tmp_path / "bin"  # a PATH without apt-get, and no Chromium anywhere
    bin_dir.mkdir()
    for tool in ("ls", "id", "env", "bash"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    missing = subprocess.run(["bash", script, tmp_path / "no-venv"], capture_output=True, text=True,
                             env={"PATH": str(bin_dir), "HOME": str(tmp_path), "CHROMIUM_CANDIDATES": "",
                                  "PLAYWRIGHT_BROWSERS_PATH": str(tmp_path / "none")})
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1 and "needs Chromium" in missing.stderr


# --- the service -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(demo_model, tmp_path_factory):
    from fastapi.testclient import TestClient

    from cliplens.service import ServiceConfig, create_app

    root = tmp_path_factory.mktemp("served")
    write_demo_data(root / "Holiday", 8, seed=31)
    cliplens.update_index([root / "Holiday"], root / "index", "demo", backend="torch")
    model = root / "models" / "my-clip"
    shutil.copytree(cliplens.resolve_model_dir("demo"), model)
    config = ServiceConfig(index=str(root / "index"), model=str(model), backend="torch", api_key="",
                           allowed_hosts=["testserver"])
    with TestClient(create_app(config)) as client:
        yield client, root


def test_every_list_and_text_in_a_request_has_a_limit(service):
    client, _ = service
    many = client.post("/v1/embed", json={"texts": ["a"] * 250_000})
    assert many.status_code == 422 and many.json()["message"].startswith("texts:")
    labels = client.post("/v1/classify", json={"image": "", "labels": [f"l{i}" for i in range(1001)]})
    assert labels.status_code == 422 and labels.json()["message"].startswith("labels:")
    long = client.post("/v1/search", json={"query": "x" * 5_000})
    assert long.status_code == 422 and long.json()["message"].startswith("query:")
    from cliplens.inputs.demo_data import generate
    import io

    image = io.BytesIO()
    next(generate(1, seed=1)).image.save(image, "PNG")
    prompts = client.post("/v1/classify", files={"image": ("x.png", image.getvalue(), "image/png")},
                          data={"labels": [f"label {i}" for i in range(100)], "templates": "imagenet"})
    assert prompts.status_code == 422 and "8000 prompts" in prompts.json()["message"]


def test_hostile_bodies_are_4xx(service):
    client, _ = service
    nested = client.post("/v1/embed", content=b"[" * 100_000, headers={"content-type": "application/json"})
    assert nested.status_code == 400 and nested.json()["error"] == "bad_json"
    broken = client.post("/v1/embed", content=b"--x\r\nnot a part", headers={"content-type": "multipart/form-data"})
    assert 400 <= broken.status_code < 500


def test_no_page_elsewhere_can_reach_it_and_no_answer_shows_server_paths(service):
    client, root = service
    assert client.get("/healthz", headers={"host": "photos.attacker.example"}).status_code == 421
    assert client.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
    body = client.post("/v1/search", json={"query": "a red circle", "top": 4}).text
    assert str(root) not in body and "Holiday/images/" in body
    models = client.get("/v1/models").json()
    assert models["models"][0]["id"] == "my-clip" and str(root) not in json.dumps(models)
    assert client.get("/healthz").json()["model"] == "my-clip"


def test_docs_work_offline_and_declare_the_key(demo_model):
    from fastapi.testclient import TestClient

    from cliplens.service import ServiceConfig, create_app

    config = ServiceConfig(model="demo", api_key="secret", allowed_hosts=["testserver"])
    with TestClient(create_app(config, encoder=demo_model)) as client:
        page = client.get("/docs").text
        assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page
        assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
        document = client.get("/openapi.json").json()
        assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert document["paths"]["/healthz"]["get"]["security"] == []


def test_a_damaged_index_is_503_and_shows_no_server_path(demo_model, tmp_path):
    """The server's index damaged while it runs: each search is answered 503 with a generic message (the file
    and the way out go to the server's log), never 400 naming index.sqlite where it lies."""
    from fastapi.testclient import TestClient

    from cliplens.service import ServiceConfig, create_app

    write_demo_data(tmp_path / "Holiday", 6, seed=37)
    index = tmp_path / "index"
    cliplens.update_index([tmp_path / "Holiday"], index, "demo", backend="torch")
    config = ServiceConfig(index=str(index), model="demo", backend="torch", api_key="", allowed_hosts=["testserver"])
    with TestClient(create_app(config, encoder=demo_model)) as client:
        assert client.post("/v1/search", json={"query": "a red circle", "top": 2}).status_code == 200
        (index / "index.sqlite").write_bytes(b"this is not a database " * 500)  # overwritten under the server
        answer = client.post("/v1/search", json={"query": "a red circle", "top": 2})
    assert answer.status_code == 503 and answer.json()["error"] == "unavailable", answer.text
    assert "damaged" in answer.json()["message"] and str(tmp_path) not in answer.text
    assert "index.sqlite" not in answer.text


def test_serve_names_the_docs_page_only_when_it_serves_one(tmp_path):
    """Without swagger-ui-bundle (the serve extra brings it) there is no /docs page, and serve does not
    claim one."""
    from cliplens.bench.serve import ServerProcess

    hidden = tmp_path / "site"
    (hidden / "swagger_ui_bundle").mkdir(parents=True)
    (hidden / "swagger_ui_bundle" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    path = os.pathsep.join([str(hidden), *filter(None, [os.environ.get("PYTHONPATH")])])
    log = tmp_path / "serve.log"
    with ServerProcess(["--model", "demo", "--backend", "torch"], env={"PYTHONPATH": path}, log=log) as server:
        import httpx

        assert httpx.get(server.url + "/docs", timeout=10).status_code == 404
    line = next(line for line in log.read_text().splitlines() if "serving on" in line)
    assert "(API at /v1)" in line and "docs" not in line


@pytest.mark.slow
def test_a_simple_client_reads_the_413_and_serve_names_its_real_port(tmp_path):
    import urllib.error
    import urllib.request

    from cliplens.bench.serve import ServerProcess

    with ServerProcess(["--model", "demo", "--backend", "torch", "--max-upload-mb", "1"]) as server:
        request = urllib.request.Request(server.url + "/v1/embed", data=b"x" * (8 * 1024 * 1024),
                                         headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=60)  # sends the whole body before it reads the answer
        assert answer.value.code == 413 and b"upload limit" in answer.value.read()
        busy = run_cli("serve", "--model", "demo", "--port", server.port, timeout=120)
        _one_line(busy, 2, f"--port {server.port}", "in use")
    log = tmp_path / "serve.log"  # ServerProcess asks for --port 0 and reads the port from what serve prints
    with ServerProcess(["--model", "demo", "--backend", "torch"], log=log) as server:
        assert server.port != 0 and f"serving on http://127.0.0.1:{server.port}" in log.read_text()
