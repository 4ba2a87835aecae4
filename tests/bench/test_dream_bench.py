"""``cliplens bench dream``: every dream judged by the model that made it, by a referee model and by the pixels;
the command prints all three and writes the contact sheet."""

from __future__ import annotations

import json

from PIL import Image
from typer.testing import CliRunner

from cliplens.bench.dream import bench_dream, contact_sheet
from cliplens.cli import app


def test_each_dream_has_the_models_the_referees_and_the_pixels_verdicts(demo_model, monkeypatch):
    import importlib

    dream_package = importlib.import_module("cliplens.dream")  # the package: cliplens.dream is the function
    images, asked = [], []
    real = dream_package.dream

    def dream(prompt, model, **options):  # the real dream, noting what each prompt was told apart from
        asked.append((prompt, tuple(options.get("against", ()))))
        return real(prompt, model, **options)

    monkeypatch.setattr(dream_package, "dream", dream)
    result = bench_dream(demo_model, ["red circle", "blue square", "green star"], prompts=["red circle", "blue square"],
                         steps=3, size="64x64", referee=demo_model, on_image=lambda label, image: images.append(label))
    data = result.to_dict()
    assert [r["label"] for r in data["runs"]] == ["red circle", "blue square"] == images
    assert data["referee"] == demo_model.name and data["guidance"] == "object" and data["size"] == [64, 64]
    assert data["contrast"] and asked == [("a red circle", ("a blue square", "a green star")),
                                          ("a blue square", ("a red circle", "a green star"))]
    for run in result.runs:  # the same model as its own referee: the same verdict
        assert run.referee_top == run.top and abs(run.referee_probability - run.probability) < 1e-6
        assert set(run.pixels) >= {"colour_dominates", "one_object", "seen_shape", "recognisable"}
    assert data["referee_ranked_first"] == data["ranked_first"]
    alone = bench_dream(demo_model, ["red circle", "blue square"], prompts=["red circle"], steps=2, size="64x64",
                        contrast=False)
    assert alone.to_dict()["referee"] is None and alone.runs[0].referee_top == ""
    assert not alone.to_dict()["contrast"] and asked[-1] == ("a red circle", ())
    sheet = contact_sheet([("red circle", Image.new("RGB", (64, 64)))], alone.runs)
    assert sheet.size == (6 * 160, 160 + 48)  # six tiles a row, each captioned in three lines


def test_the_command_prints_both_models_and_writes_the_sheet(tmp_path):
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(app, ["bench", "dream", "red circle", "--steps", "2", "--size", "64x64",
                                      "--sheet", str(sheet), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["referee"] and figures["model"] != figures["referee"]  # demo-robust dreams, demo referees
    assert figures["referee_ranked_first"] in (0, 1) and figures["pixels"]["judged"] == 1 and figures["contrast"]
    assert sheet.exists()
