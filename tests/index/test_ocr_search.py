"""Search by the words in a photo: `index --ocr` reads each photo's and scene's text once (later runs add it to
photos indexed without it, re-encoding nothing), and `search --contains-text` finds them, forgiving case, the
spaces OCR drops and a misread letter, alone or with a query and other filters."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from cliplens.index import IndexStore, PhotoIndex, SearchFilter, update_index
from cliplens.inputs.demo_data import ShapeScene, render_scene
from cliplens.inputs.ocr import text_contains

from conftest import run_cli
from media_files import write_video

pytest.importorskip("rapidocr_onnxruntime")


def _with_sign(scene: Image.Image, word: str) -> Image.Image:
    image = scene.copy()
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 150, 214, 214), fill=(250, 250, 250))
    draw.text((20, 158), word, fill=(0, 0, 0), font=ImageFont.load_default(size=40))
    return image


def _scene(shape: str, colour: str, seed: int) -> Image.Image:
    return render_scene(ShapeScene(shape, colour, 1, "large", "gray"), random.Random(seed), 224)


def test_approximate_text_matching():
    assert text_contains("green triangle", "GREENTRIANGLE") and text_contains("exit", "Emergency EXIT here")
    assert text_contains("bakery", "BAKFRY")  # one misread letter in six
    assert not text_contains("bakery", "BAKFRX") and not text_contains("exit", "EXTI")  # short words: exact
    assert not text_contains("sale", "") and not text_contains("", "sale")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signs")
    _with_sign(_scene("circle", "red", 1), "BAKERY").save(folder / "bakery.png")
    _with_sign(_scene("square", "blue", 2), "EXIT 42").save(folder / "exit.png")
    _scene("star", "yellow", 3).save(folder / "plain.png")
    write_video(folder / "clip.mp4", [(_scene("triangle", "green", 4), 2), (_with_sign(_scene("cross", "purple", 5),
                                                                                          "HOTEL"), 2)])
    index = tmp_path_factory.mktemp("signs-index")
    first = update_index([folder], index, "demo", backend="torch")  # without --ocr
    assert first.texts_read == 0
    return folder, index


def test_a_later_ocr_run_reads_the_text_without_re_encoding(library):
    folder, index = library
    run = update_index([folder], index, "demo", backend="torch", ocr=True)
    assert run.encoded == 0 and run.texts_read == 3 + 2  # three photos, two scenes
    again = update_index([folder], index, "demo", backend="torch", ocr=True)
    assert again.texts_read == 0  # each is read once
    store = IndexStore(index)
    try:
        texts = sorted(t for t in store.texts(range(1, 100)).values() if t)
        assert [t.replace(" ", "") for t in texts] == ["BAKERY", "EXIT42", "HOTEL"]
    finally:
        store.close()


def test_search_by_the_words_in_a_photo(library):
    folder, index = library
    update_index([folder], index, "demo", backend="torch", ocr=True)
    photos = PhotoIndex(index)
    try:
        def names(**fields):
            result = photos.search(fields.pop("query", None), filters=SearchFilter(**fields), top=10)
            return [(Path(h.path).name, h.time, h.text) for h in result.hits]

        assert [n[:2] for n in names(text="bakery")] == [("bakery.png", None)]
        assert names(text="Bakery")[0][2].replace(" ", "") == "BAKERY"
        assert [n[:2] for n in names(text="exit42")] == [("exit.png", None)]  # spaces forgiven
        assert [n[:2] for n in names(text="hotel")] == [("clip.mp4", 2.0)]  # a video's scene, at its moment
        assert names(text="hotel", kind="photo") == [] and names(text="pharmacy") == []
        assert [n[0] for n in names(query="a blue square", text="exit")] == ["exit.png"]
    finally:
        photos.close()


def test_a_changed_photo_has_its_text_read_again(library, tmp_path):
    import shutil

    folder, _ = library
    lib = tmp_path / "lib"
    shutil.copytree(folder, lib)
    index = tmp_path / "index"
    update_index([lib], index, "demo", backend="torch", ocr=True)
    _with_sign(_scene("circle", "red", 1), "PHARMACY").save(lib / "bakery.png")
    run = update_index([lib], index, "demo", backend="torch", ocr=True)
    assert run.encoded == 1 and run.texts_read == 1
    photos = PhotoIndex(index)
    try:
        assert photos.search(filters=SearchFilter(text="bakery")).hits == []
        assert [Path(h.path).name for h in photos.search(filters=SearchFilter(text="pharmacy")).hits] == ["bakery.png"]
    finally:
        photos.close()


def test_cli_contains_text(library):
    folder, index = library
    update_index([folder], index, "demo", backend="torch", ocr=True)
    proc = run_cli("search", "--contains-text", "EXIT", "--index", index, "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)["results"]
    assert [Path(h["path"]).name for h in hits] == ["exit.png"] and "EXIT" in hits[0]["text"]
    proc = run_cli("search", "--contains-text", "exit", "--index", index)
    assert proc.returncode == 0 and "exit.png" in proc.stdout and "EXIT" in proc.stdout


def test_the_service_searches_by_words(library, demo_model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cliplens.service import ServiceConfig, create_app

    folder, index = library
    update_index([folder], index, "demo", backend="torch", ocr=True)
    app = create_app(ServiceConfig(index=str(index), model="demo", backend="torch", api_key="",
                                   allowed_hosts=["testserver"]), encoder=demo_model)
    with TestClient(app) as client:
        body = client.post("/v1/search", data={"contains_text": "bakery"}).json()
        assert [Path(h["path"]).name for h in body["results"]] == ["bakery.png"]
        assert body["results"][0]["text"].replace(" ", "") == "BAKERY"
