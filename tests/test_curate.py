"""CLIP as curator on the demo model: ranking images for a prompt, CLIPScore and RefCLIPScore."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

import cliplens
from cliplens.inputs.demo_data import DEMO_LABELS, generate
from cliplens.errors import UsageError
from cliplens.inputs.pairs import Pair, read_pairs


def test_rank_puts_the_matching_image_first(demo_model, tmp_path):
    rng = random.Random(7)
    samples = list(generate(600, seed=2026))
    by_label: dict[str, list] = {}
    for sample in samples:
        by_label.setdefault(sample.scene.label, []).append(sample)
    trials, wins = 0, 0
    for trial in range(40):
        label = rng.choice([name for name in DEMO_LABELS if name in by_label])
        target = rng.choice(by_label[label])
        others = [s for s in samples if s.scene.label != label]
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        target.image.save(folder / "target.png")
        for i, distractor in enumerate(rng.sample(others, 7)):
            distractor.image.save(folder / f"other{i}.png")
        ranking = cliplens.rank_images(f"a photo of a {label}", sorted(folder.glob("*.png")), demo_model)
        trials += 1
        wins += ranking.results[0].path.endswith("target.png")
        assert [r.score for r in ranking.results] == sorted((r.score for r in ranking.results), reverse=True)
    assert wins / trials >= 0.95, f"matching image first in {wins}/{trials} trials"


def test_negative_prompt_pushes_down_what_is_unwanted(demo_model, tmp_path):
    circles = [s for s in generate(300, seed=11) if s.scene.shape == "circle"]
    red = [s for s in circles if s.scene.colour == "red"][:3]
    other = [s for s in circles if s.scene.colour != "red"][:3]
    for i, sample in enumerate(red + other):
        sample.image.save(tmp_path / f"{'red' if i < 3 else 'other'}{i}.png")
    paths = sorted(tmp_path.glob("*.png"))
    plain = cliplens.rank_images("a photo of a red circle", paths, demo_model)
    assert all("red" in r.path.rsplit("/", 1)[1] for r in plain.results[:3])
    steered = cliplens.rank_images("a photo of a red circle", paths, demo_model, negative=["a photo of a red square"],
                                   rerank=False)
    # the negative is subtracted: each score is the prompt's cosine less the negative's
    vectors = demo_model.encode_images([r.path for r in steered.results])
    texts = demo_model.encode_texts(["a photo of a red circle", "a photo of a red square"])
    expected = vectors @ texts[0] - vectors @ texts[1]
    assert np.allclose([r.score for r in steered.results], expected, atol=1e-5)
    # re-ranking (on by default for the demo model, which ships a calibration) further subtracts each
    # image's best reference cosine
    reranked = cliplens.rank_images("a photo of a red circle", paths, demo_model, negative=["a photo of a red square"])
    offsets = {r.path: r.score for r in steered.results}
    assert all(r.score < offsets[r.path] for r in reranked.results)
    with pytest.raises(UsageError):
        cliplens.rank_images(" ", paths, demo_model)


def _independent_cosines(image_paths, texts):
    """Cosines computed with transformers directly (CLIPModel + CLIPProcessor), not through cliplens."""
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizerFast, PreTrainedTokenizerFast

    from cliplens.models import DEMO_DIR

    model = CLIPModel.from_pretrained(DEMO_DIR).eval()
    processor = CLIPImageProcessorPil.from_pretrained(DEMO_DIR)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(DEMO_DIR)
    del CLIPTokenizerFast
    with torch.no_grad():
        pixels = processor([Image.open(p).convert("RGB") for p in image_paths], return_tensors="pt")["pixel_values"]
        image = model.get_image_features(pixel_values=pixels).pooler_output
        tokens = tokenizer(list(texts), padding=True, return_tensors="pt")
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return image.numpy(), text.numpy()


def test_clipscore_and_refclipscore_match_an_independent_computation(demo_model, tmp_path):
    samples = list(generate(6, seed=31))
    rows = []
    for i, sample in enumerate(samples):
        path = tmp_path / f"{i}.png"
        sample.image.save(path)
        caption = sample.caption if i % 2 == 0 else samples[(i + 1) % len(samples)].caption  # some mismatched
        rows.append(Pair(path, caption, (sample.scene.caption(), "a picture of shapes")))
    result = cliplens.clip_scores(rows, demo_model)
    images, captions = _independent_cosines([r.path for r in rows], ["A photo depicts " + r.caption for r in rows])
    cos = np.sum(images * captions, axis=1)
    assert np.allclose([r.clip_score for r in result.results], 2.5 * np.maximum(cos, 0), atol=1e-4)
    assert result.clip_score == pytest.approx(float(np.mean(2.5 * np.maximum(cos, 0))), abs=1e-4)
    for row, scored, caption_vector, clip_s in zip(rows, result.results, captions, 2.5 * np.maximum(cos, 0)):
        _, refs = _independent_cosines([row.path], ["A photo depicts " + r for r in row.references])
        text_s = 2.5 * max(float(np.max(refs @ caption_vector)), 0)
        assert scored.ref_clip_score == pytest.approx(2 * clip_s * text_s / (clip_s + text_s), abs=1e-4)
    matched = [r.clip_score for i, r in enumerate(result.results) if i % 2 == 0]
    mismatched = [r.clip_score for i, r in enumerate(result.results) if i % 2 == 1]
    assert np.mean(matched) > np.mean(mismatched)


@pytest.mark.slow
def test_rank_and_score_commands(cli, tmp_path):
    for i, sample in enumerate(generate(5, seed=41)):
        sample.image.save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_bytes(b"nope")
    proc = cli("rank", "a photo of a blue star", str(tmp_path), "--model", "demo", "--top", "2",
                "--copy-to", str(tmp_path / "best"), "--json")
    assert proc.returncode == 1 and "broken.png" in proc.stderr  # the bad file is reported, the rest ranked
    data = json.loads(proc.stdout)
    assert list(data) == ["prompt", "score_kind", "results"] and len(data["results"]) == 2
    assert data["score_kind"] == "margin"  # the demo model ships a calibration: the ranking is re-ranked
    assert all(list(r) == ["path", "index", "score", "similarity"] for r in data["results"])
    inputs = sorted(p for p in tmp_path.iterdir() if p.is_file())
    assert all(inputs[r["index"]].name == Path(r["path"]).name for r in data["results"])
    names = sorted(p.name for p in (tmp_path / "best").iterdir())
    assert names == [f"001_{data['results'][0]['path'].rsplit('/', 1)[1]}",
                     f"002_{data['results'][1]['path'].rsplit('/', 1)[1]}"]

    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption", "references"])
        writer.writerow(["img0.png", "a red circle", "a circle|red shapes"])
        writer.writerow(["img1.png", "a blue star", ""])
    assert read_pairs(pairs)[0].references == ("a circle", "red shapes")
    scored = cli("score", str(pairs), "--model", "demo", "--json", "-o", str(tmp_path / "scores.csv"))
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["pairs"] == 2 and report["results"][0]["ref_clip_score"] is not None
    assert "ref_clip_score" not in report["results"][1]
    assert report["clip_score"] == pytest.approx(np.mean([r["clip_score"] for r in report["results"]]))
    with (tmp_path / "scores.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2
    again = cli("score", str(pairs), "--model", "demo", "-o", str(tmp_path / "scores.csv"))
    assert again.returncode == 2 and "already exists" in again.stderr and "(pass --overwrite)" in again.stderr
