"""Contrastive training: from scratch, resume, determinism, fine-tuning and the pairs file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cliplens
from cliplens.inputs.demo_data import write_demo_data
from cliplens.errors import DataError, UsageError
from cliplens.train import TrainConfig, contrastive_loss, train

TINY = {"image_size": 32, "patch_size": 16, "vision_layers": 1, "text_layers": 1, "width": 32, "heads": 2,
        "mlp": 64, "projection_dim": 16, "context_length": 24}


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("pairs"), 48, seed=3, size=32)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    path = tmp_path_factory.mktemp("preset") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def _config(pairs, out, preset, **kw):
    return TrainConfig(pairs=str(pairs), out=str(out), preset=preset, batch_size=16, lr=1e-3, save_every=3, **kw)


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def test_checkpoint_is_hf_format_and_loads_everywhere(pairs_file, tiny_preset, tmp_path):
    result = train(_config(pairs_file, tmp_path / "m", tiny_preset, steps=4))
    out = result.out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "preprocessor_config.json"):
        assert (out / name).exists(), name
    from transformers import AutoModel, AutoTokenizer

    assert type(AutoModel.from_pretrained(out)).__name__ == "CLIPModel"
    assert AutoTokenizer.from_pretrained(out)("a red circle")["input_ids"][-1] == 3  # <eos>
    encoder = cliplens.load_model(str(out), device="cpu", cache=False)
    assert encoder.encode_texts(["a red circle"]).shape == (1, 16)
    assert np.isfinite(result.final_loss)


def test_same_seed_same_weights(pairs_file, tiny_preset, tmp_path):
    a = train(_config(pairs_file, tmp_path / "a", tiny_preset, steps=3, seed=7)).out
    b = train(_config(pairs_file, tmp_path / "b", tiny_preset, steps=3, seed=7)).out
    c = train(_config(pairs_file, tmp_path / "c", tiny_preset, steps=3, seed=8)).out
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not all(np.array_equal(wa[k], wc[k]) for k in wa)


def test_resume_continues_exactly(pairs_file, tiny_preset, tmp_path):
    straight = train(_config(pairs_file, tmp_path / "s", tiny_preset, steps=6)).out

    class Stop(Exception):
        pass

    def stop_after_first_checkpoint(step, model):
        raise Stop

    with pytest.raises(Stop):
        train(_config(pairs_file, tmp_path / "r", tiny_preset, steps=6), on_checkpoint=stop_after_first_checkpoint)
    resumed = train(_config(pairs_file, tmp_path / "r", tiny_preset, steps=6), resume=True).out
    ws, wr = _weights(straight), _weights(resumed)
    for key in ws:
        np.testing.assert_allclose(ws[key], wr[key], atol=1e-6, err_msg=key)


def test_resume_needs_a_saved_run(pairs_file, tiny_preset, tmp_path):
    with pytest.raises(UsageError, match="nothing to resume"):
        train(_config(pairs_file, tmp_path / "none", tiny_preset, steps=3), resume=True)


def test_fine_tune_from_init(tiny_clip_dir, pairs_file, tmp_path):
    out = train(TrainConfig(pairs=str(pairs_file), out=str(tmp_path / "ft"), init=str(tiny_clip_dir), steps=2,
                            batch_size=8, lr=1e-4, save_every=0)).out
    before, after = _weights(tiny_clip_dir), _weights(out)
    assert before.keys() == after.keys()
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert json.loads((out / "preprocessor_config.json").read_text())["crop_size"] == {"height": 32, "width": 32}


def test_fine_tuning_a_word_level_model_learns_new_words(pairs_file, tiny_preset, tmp_path):
    from transformers import AutoTokenizer

    base = train(_config(pairs_file, tmp_path / "base", tiny_preset, steps=2)).out  # one-shape captions only
    mixed = write_demo_data(tmp_path / "mixed", 32, seed=4, size=32, mixed=1.0)
    assert " and " in mixed.read_text()
    out = train(TrainConfig(pairs=str(mixed), out=str(tmp_path / "ft"), init=str(base), steps=2, batch_size=8,
                            lr=1e-4, save_every=0)).out
    old, new = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(out)
    assert "and" not in old.get_vocab() and "and" in new.get_vocab()
    added = {v for k, v in new.get_vocab().items() if k not in old.get_vocab()}
    spare = {v for k, v in old.get_vocab().items() if k.startswith("<spare")}
    assert len(spare) == 64 and added and added <= spare  # new words take spare slots: no row is added
    kept = {k: v for k, v in new.get_vocab().items() if k in old.get_vocab()}
    assert kept == {k: v for k, v in old.get_vocab().items() if v not in added}  # old ids keep their meaning
    ids = new("a red circle and a blue star")["input_ids"]
    assert new.unk_token_id not in ids
    before, after = _weights(base), _weights(out)
    key = "text_model.embeddings.token_embedding.weight"
    assert after[key].shape == before[key].shape
    encoder = cliplens.load_model(str(out), device="cpu", cache=False)
    assert encoder.encode_texts(["a circle and a star"]).shape == (1, 16)


def test_new_words_start_as_the_original_read_them_and_grow_past_the_spare_slots(pairs_file, tiny_preset, tmp_path):
    """A new word's row starts as <unk>'s, so before any step the model reads every text as the original
    did; words beyond the spare slots get rows appended at the end."""
    from transformers import AutoModel, AutoTokenizer

    from cliplens.train import align_token_embedding
    from cliplens.train.vocab import token_embedding, with_words

    base = train(_config(pairs_file, tmp_path / "base", tiny_preset, steps=1)).out
    tokenizer = AutoTokenizer.from_pretrained(base)
    words = [f"word{i}" for i in range(70)]
    extended = with_words(tokenizer, words)
    ids = extended.convert_tokens_to_ids(words)
    assert sorted(ids[:64]) == sorted(v for k, v in tokenizer.get_vocab().items() if k.startswith("<spare"))
    assert ids[64:] == list(range(len(tokenizer), len(tokenizer) + 6))
    original, model = AutoModel.from_pretrained(base).eval(), AutoModel.from_pretrained(base).eval()
    fresh = align_token_embedding(model, tokenizer, extended)
    assert sorted(fresh) == sorted(ids)
    weight = token_embedding(model).weight
    assert weight.shape[0] == len(tokenizer) + 6
    unk = token_embedding(original).weight[tokenizer.unk_token_id]
    assert all(torch.equal(weight[i], unk) for i in ids)
    text = "a red word3 circle word69"
    with torch.no_grad():
        a = original.get_text_features(**tokenizer([text], return_tensors="pt")).pooler_output
        b = model.get_text_features(**extended([text], return_tensors="pt")).pooler_output
    torch.testing.assert_close(a, b)


def test_training_lowers_the_loss(pairs_file, tiny_preset, tmp_path):
    losses = []
    train(_config(pairs_file, tmp_path / "l", tiny_preset, steps=30), on_step=lambda s: losses.append(s.loss))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_bad_images_in_pairs_are_skipped_and_reported(pairs_file, tiny_preset, tmp_path):
    bad = tmp_path / "pairs.csv"
    lines = pairs_file.read_text().splitlines()
    base = pairs_file.parent
    rows = [lines[0]] + [f"{base}/{line}" for line in lines[1:20]] + ["/nonexistent/x.png,a red circle,,,,,,,"]
    bad.write_text("\n".join(rows) + "\n")
    result = train(_config(bad, tmp_path / "b", tiny_preset, steps=2))
    assert result.images == 19 and len(result.skipped) == 1
    assert "no such file" in result.skipped[0].reason


def test_pairs_file_errors_name_file_and_line(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("file,text\nx.png,a cat\n")
    with pytest.raises(DataError, match=r"p\.csv:1: header lacks"):
        train(TrainConfig(pairs=str(csv_file), out=str(tmp_path / "o")))
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"path": "x.png", "caption": "a cat"}\n{oops\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: not valid JSON"):
        train(TrainConfig(pairs=str(jsonl), out=str(tmp_path / "o")))


def test_soft_targets_treat_identical_captions_as_matches():
    """Matching an image to a duplicate caption's twin costs nothing extra with soft targets only."""
    own = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    swapped = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    captions = ["red circle", "red circle", "blue star"]
    assert contrastive_loss(swapped, captions, soft=True) == pytest.approx(contrastive_loss(own, captions, soft=True).item())
    assert contrastive_loss(swapped, captions, soft=False) > contrastive_loss(own, captions, soft=False) + 1
    sig_own = contrastive_loss(own, captions, soft=True, sigmoid=True)
    assert contrastive_loss(swapped, captions, soft=True, sigmoid=True) == pytest.approx(sig_own.item())


@pytest.mark.slow
def test_cli_demo_data_then_train_then_resume(cli, tiny_preset, tmp_path):
    proc = cli("demo-data", "--out", str(tmp_path / "d"), "-n", "40", "--size", "32", "--seed", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    pairs = json.loads(proc.stdout)["pairs"]
    header = open(pairs).readline().strip().split(",")
    assert header[:3] == ["path", "caption", "full_caption"] and "shape" in header
    out = tmp_path / "m"
    proc = cli("train", pairs, "--out", str(out), "--config", tiny_preset, "--steps", "4", "--batch-size", "8",
                "--save-every", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 4 and summary["images"] == 40 and summary["skipped"] == 0
    assert "Traceback" not in proc.stderr
    proc = cli("train", pairs, "--out", str(out), "--config", tiny_preset, "--steps", "4", "--resume")
    assert proc.returncode == 2 and "already trained for all 4 steps" in proc.stderr
    proc = cli("train", pairs, "--out", str(out), "--steps", "9", "--resume")
    assert proc.returncode == 2 and "resume it with the same number" in proc.stderr


def test_streaming_mode_reports_a_bad_file_once(pairs_file, tiny_preset, tmp_path):
    """Without the in-memory cache images decode per batch; a bad one is skipped and reported once."""
    lines = pairs_file.read_text().splitlines()
    base = pairs_file.parent
    bad_image = tmp_path / "broken.png"
    bad_image.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rows = [lines[0]] + [f"{base}/{line}" for line in lines[1:9]] + [f"{bad_image},a red circle,,,,,,,"]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n")
    config = _config(pairs, tmp_path / "s", tiny_preset, steps=6, cache_images=False)
    config.batch_size = 9  # every step is one whole epoch, so the bad file is met six times
    result = train(config)
    assert result.images == 9 and len(result.skipped) == 1
    assert result.skipped[0].source == str(bad_image)
