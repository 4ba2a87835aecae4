"""An honest "no match": search results carry the probability that the image shows the query, and a
minimum match leaves a query that no image shows with no results (demo model, a library without stars)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cliplens.errors import UsageError
from cliplens.index import PhotoIndex, update_index
from cliplens.inputs.demo_data import generate
from cliplens.text.prompts import LabelWarning

from conftest import run_cli


@pytest.fixture(scope="module")
def no_stars(tmp_path_factory):
    """120 one-shape demo images, none of them a star; each file named after its scene's label."""
    folder = tmp_path_factory.mktemp("no-stars")
    kept = 0
    for sample in generate(400, seed=8642):
        if sample.scene.shape == "star":
            continue
        sample.image.save(folder / f"{kept:03d}_{sample.scene.label.replace(' ', '_')}.png")
        kept += 1
        if kept == 120:
            break
    index = tmp_path_factory.mktemp("no-stars-index")
    update_index([folder], index, "demo", backend="torch")
    return folder, index


def _label(path: str) -> str:
    return Path(path).stem.split("_", 1)[1].replace("_", " ")


def test_a_query_no_image_shows_has_no_results_and_names_the_near_miss(no_stars):
    _, index = no_stars
    photos = PhotoIndex(index)
    try:
        ranked = photos.search("blue star", top=10)
        assert len(ranked.hits) == 10 and all(h.match < 0.5 for h in ranked.hits)  # a ranking always has a top 10
        honest = photos.search("blue star", top=10, min_match=0.5)
        assert honest.hits == [] and honest.near_miss is not None and honest.near_miss.match < 0.5
        assert honest.to_dict()["results"] == [] and honest.to_dict()["near_miss"]["match"] < 0.5
    finally:
        photos.close()


def test_a_minimum_match_keeps_the_images_that_show_the_query(no_stars):
    folder, index = no_stars
    present = {label: sum(1 for p in folder.iterdir() if _label(str(p)) == label)
               for label in ("red circle", "purple square", "green triangle")}
    photos = PhotoIndex(index)
    try:
        for label, count in present.items():
            assert count >= 2, label
            result = photos.search(label, top=count, min_match=0.5)
            right = np.mean([_label(h.path) == label for h in result.hits])
            assert len(result.hits) >= count // 2 and right >= 0.9, (label, count, [(_label(h.path), h.match)
                                                                                       for h in result.hits])
            assert all(h.match >= 0.5 for h in result.hits) and result.near_miss is None
    finally:
        photos.close()


def test_match_needs_a_query_of_one_text_the_model_can_read(no_stars):
    folder, index = no_stars
    photos = PhotoIndex(index)
    try:
        by_image = photos.search(image=next(folder.iterdir()), top=3)
        assert all(h.match is None for h in by_image.hits)  # an example image is not a statement to match
        with pytest.raises(UsageError) as caught:
            photos.search('"red circle" - "red"', top=3, min_match=0.5)
        assert caught.value.parameter == "min_match"
        with pytest.warns(LabelWarning, match="does not know every word of 'vanilla sugar'"):
            unknown = photos.search("vanilla sugar", top=5, min_match=0.5)
        assert unknown.hits == []  # words the model cannot read match nothing, whatever the cosines say
    finally:
        photos.close()


def test_cli_min_match_says_nothing_matches_and_json_carries_match(no_stars):
    _, index = no_stars
    proc = run_cli("search", "blue star", "--index", index, "--min-match", "0.5")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert 'no image shows "blue star" with a match of at least 0.5; the closest:' in proc.stderr
    proc = run_cli("search", "red circle", "--index", index, "-k", "3", "--json")
    data = json.loads(proc.stdout)
    assert data["near_miss"] is None and all(0 <= r["match"] <= 1 for r in data["results"])
    proc = run_cli("search", "red circle", "--index", index, "--min-match", "1.5")
    assert proc.returncode == 2 and "--min-match" in proc.stderr and "between 0 and 1" in proc.stderr
