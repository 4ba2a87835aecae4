"""Text in images: a real OCR engine (rapidocr, the ocr extra) finds the words on signs, covering them leaves the
rest of the picture, shapes it "reads" are not text, and --ignore-text restores the right answer to attacked
images without touching clean ones."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import cliplens
from cliplens.errors import UsageError
from cliplens.inputs import ocr
from cliplens.inputs.demo_data import DEMO_LABELS, generate, hijacked_label
from cliplens.inputs.ocr import TextRegion, cover_text, read_text

from conftest import run_cli

pytest.importorskip("rapidocr_onnxruntime")


def _sign(word: str, size=(320, 160)) -> Image.Image:
    image = Image.new("RGB", size, (40, 120, 60))
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 40, 300, 120), fill=(250, 250, 245))
    draw.text((40, 52), word, fill=(10, 10, 10), font=ImageFont.load_default(size=48))
    return image


def test_the_words_on_a_sign_are_read_and_covered():
    image = _sign("SALE 50")
    regions = read_text(image)
    assert [r.text.replace(" ", "").upper() for r in regions] == ["SALE50"] and regions[0].is_text
    clean, covered = cover_text(image, regions)
    assert covered == regions and [r for r in read_text(clean) if r.is_text] == []
    before, after = np.asarray(image), np.asarray(clean)
    assert (before[:, :10] == after[:, :10]).all()  # far from the sign, nothing changed
    assert (before[60:100, 60:260] != after[60:100, 60:260]).any()


def test_shapes_the_recogniser_reads_are_not_text():
    for text in ("+", "++", "X", "XX", "O", "★", "+十", "￥+"):
        assert not TextRegion(((0, 0), (1, 0), (1, 1), (0, 1)), text, 0.99).is_text
    for text in ("no", "STOP", "42", "greentriangle"):
        assert TextRegion(((0, 0), (1, 0), (1, 1), (0, 1)), text, 0.99).is_text
    assert not TextRegion(((0, 0), (1, 0), (1, 1), (0, 1)), "STOP", 0.3).is_text  # not trusted


def test_ignore_text_restores_attacked_images_and_leaves_clean_ones(demo_model):
    attacked = list(generate(24, seed=41, size=224, words=1.0))
    clean = list(generate(24, seed=42, size=224))
    plain = cliplens.Classifier(DEMO_LABELS, demo_model)
    covered = cliplens.Classifier(DEMO_LABELS, demo_model, ignore_text=True)

    def top1(classifier, samples):
        results = list(classifier.classify_many([s.image for s in samples]))
        return results, sum(r.top.label == s.scene.label for r, s in zip(results, samples))

    _, attacked_plain = top1(plain, attacked)
    results, attacked_covered = top1(covered, attacked)
    assert attacked_covered > attacked_plain and attacked_covered >= 22
    found = [r.text_covered for r in results]
    assert sum(len(f) == 1 for f in found) >= 20  # each image's own sign, reported with it
    assert all(f[0].text.lower() in s.scene.word.lower() or s.scene.word.lower() in f[0].text.lower()
               for f, s in zip(found, attacked) if len(f) == 1)
    clean_results, clean_covered = top1(covered, clean)
    assert clean_covered >= top1(plain, clean)[1] and all(r.text_covered == [] for r in clean_results)
    assert sum(hijacked_label(s.scene) != s.scene.label for s in attacked) >= 12  # the signs do contradict
    one = covered.classify(attacked[0].image).to_dict()
    assert one["text_covered"] == 1 and one["text_found"]


def test_without_the_extra_the_option_names_it(monkeypatch, demo_model):
    monkeypatch.setattr(ocr, "_engine", None)
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    with pytest.raises(UsageError, match=r"ocr extra: pip install 'cliplens\[ocr\]'") as caught:
        cliplens.Classifier(["a"], demo_model, ignore_text=True)
    assert caught.value.parameter == "ignore_text"


def test_cli_classify_and_rank_say_what_they_covered(tmp_path):
    sample = next(s for s in generate(10, seed=43, size=224, words=1.0) if hijacked_label(s.scene) != s.scene.label)
    sample.image.save(tmp_path / "attacked.png")
    proc = run_cli("classify", tmp_path / "attacked.png", *DEMO_LABELS[:12], sample.scene.label,
                   hijacked_label(sample.scene), "--model", "demo", "--ignore-text", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["text_covered"] == 1 and result["labels"][0]["label"] == sample.scene.label
    proc = run_cli("rank", sample.scene.label, tmp_path / "attacked.png", "--model", "demo", "--ignore-text",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["text_covered"] == 1


def test_the_caption_guard_takes_the_ocr_evidence_and_ignore_text_recovers_the_picture(demo_model):
    samples = list(generate(12, seed=43, size=224, words=1.0))
    plain = cliplens.Captioner(demo_model)
    reading = cliplens.Captioner(demo_model, read_text=True)
    covering = cliplens.Captioner(demo_model, ignore_text=True)
    read = list(reading.caption_many([s.image for s in samples]))
    for caption, sample in zip(read, samples):
        assert caption.text_found and caption.to_dict()["text_covered"] == 0
        for labels in caption.banks.values():  # a label written in the image is a suspect, whatever the model reads
            assert all(c.typographic_suspect for c in labels if c.label == sample.scene.word)
    shows = lambda caption, s: s.scene.shape in caption.caption  # noqa: E731
    recovered = sum(shows(covering.caption(s.image), s) for s in samples)
    assert recovered > sum(shows(plain.caption(s.image), s) for s in samples) and recovered >= 6


def test_score_ignore_text_writes_what_it_covered(tmp_path):
    sample = next(s for s in generate(10, seed=44, size=224, words=1.0) if hijacked_label(s.scene) != s.scene.label)
    sample.image.save(tmp_path / "a.png")
    (tmp_path / "pairs.csv").write_text(f"path,caption\n{tmp_path / 'a.png'},a {sample.scene.label}\n")
    proc = run_cli("score", tmp_path / "pairs.csv", "--model", "demo", "--ignore-text", "-o", tmp_path / "s.csv",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["results"][0]
    assert row["text_covered"] == 1 and row["text_found"]
    assert "text_found" in (tmp_path / "s.csv").read_text().splitlines()[0]


def test_bench_typographic_json(tmp_path):
    proc = run_cli("bench", "typographic", "-n", "12", "--json")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert list(figures) == ["model", "runtime", "images", "clean_top1", "clean_ignore_text_top1", "attacked_top1",
                             "attacked_ignore_text_top1", "contradicting", "word_wins", "word_wins_ignore_text",
                             "attacked_with_text_found", "clean_with_text_found", "ocr_ms_per_image", "cpu"]
    assert figures["images"] == 12 and 0 < figures["contradicting"] <= 12
    assert figures["attacked_with_text_found"] >= 0.8 and figures["clean_with_text_found"] == 0.0
    assert figures["attacked_ignore_text_top1"] >= figures["attacked_top1"] and figures["ocr_ms_per_image"] > 0
