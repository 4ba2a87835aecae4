"""Label bank files: parsing, resolving names, files and folders, default banks per model."""

from __future__ import annotations

import pytest

from cliplens.text.banks import GENERAL_BANKS, LabelBank, builtin_bank, builtin_bank_names, parse_bank, resolve_banks
from cliplens.errors import DataError, UsageError
from cliplens.models import DEMO_DIR

BANK_TEXT = """# name: pets
# description: Pets.
# template: Image with {} in it.
# prompts: a photo of {}. | a picture of {}.
# top_k: 2
# threshold: 0.3
a dog
# a note between labels is skipped
a cat
a dog
"""


def test_bank_file_header_and_labels():
    bank = parse_bank(BANK_TEXT, source="pets.txt")
    assert bank.name == "pets" and bank.description == "Pets."
    assert bank.labels == ("a dog", "a cat")  # repeats dropped, comments skipped
    assert bank.template == "Image with {} in it." and bank.prompts == ("a photo of {}.", "a picture of {}.")
    assert (bank.top_k, bank.threshold) == (2, 0.3)
    assert parse_bank(bank.to_text()) == bank
    assert parse_bank("a dog\n", name="x").scored_prompts == (LabelBank.template,)


def test_sentences():
    bank = parse_bank(BANK_TEXT)
    assert bank.sentence(["a sheep"]) == "Image with a sheep in it."
    assert bank.sentence(["a sheep", "a dog", "a cat"]) == "Image with a sheep, a dog and a cat in it."
    assert bank.sentence([]) == ""
    assert LabelBank("x", ("y",), template="{} is here.").sentence(["snow"]) == "Snow is here."


def test_content_hash_follows_labels_and_prompts_only():
    bank = parse_bank(BANK_TEXT)
    assert parse_bank(BANK_TEXT.replace("top_k: 2", "top_k: 1")).content_hash == bank.content_hash
    assert parse_bank(BANK_TEXT + "a fish\n").content_hash != bank.content_hash
    assert parse_bank(BANK_TEXT.replace("a photo of", "an image of")).content_hash != bank.content_hash


@pytest.mark.parametrize("text, source, message", [
    ("# name: x\n# template: no slot\na\n", "b.txt", "b.txt: template 'no slot' needs a {}"),
    ("# name: x\n", "b.txt", "b.txt: the bank holds no labels"),
    ("a\n", "", "has no name"),
    ("# name: x\n# top_k: many\na\n", "b.txt", "b.txt: bad header value"),
    ("# name: x\n# threshold: 2\na\n", "b.txt", "between 0 and 1"),
])
def test_bad_bank_files_name_the_problem(text, source, message):
    with pytest.raises(DataError, match=message):
        parse_bank(text, source=source)


def test_shipped_banks_are_large_enough():
    sizes = {name: len(builtin_bank(name).labels) for name in builtin_bank_names()}
    assert sizes["objects"] >= 1000 and sizes["places"] >= 300
    assert {"mediums", "styles", "people", "time_weather", "colours", "demo_shapes", "demo_colours",
            "demo_backgrounds"} <= set(sizes)
    assert {"a photo", "a pencil sketch", "an oil painting", "a 3D render", "a screenshot", "a meme",
            "a diagram"} <= set(builtin_bank("mediums").labels)


def test_resolve_names_files_folders_and_defaults(tmp_path):
    (tmp_path / "pets.txt").write_text(BANK_TEXT)
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "tools.txt").write_text("# name: tools\na hammer\n")
    (folder / "fruit.txt").write_text("an apple\n")  # no name in the header: the file's stem
    banks = resolve_banks([f"animals={tmp_path / 'pets.txt'}", "people,mediums", str(folder)])
    assert [b.name for b in banks] == ["animals", "people", "mediums", "fruit", "tools"]
    assert [b.name for b in resolve_banks(None, DEMO_DIR)] == ["demo_shapes", "demo_colours", "demo_backgrounds"]
    assert [b.name for b in resolve_banks(None, tmp_path)] == list(GENERAL_BANKS)
    with pytest.raises(UsageError, match="unknown bank 'nope'"):
        resolve_banks(["nope"])
    with pytest.raises(UsageError, match="two banks are named 'people'"):
        resolve_banks(["people", f"people={tmp_path / 'pets.txt'}"])
    with pytest.raises(UsageError, match="no such file"):
        resolve_banks([f"x={tmp_path / 'missing.txt'}"])
