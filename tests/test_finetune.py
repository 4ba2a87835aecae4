"""Fine-tuning without forgetting: held-out evaluation, weight-space ensembling, frozen towers and LoRA,
on the demo model and new shapes it has never seen."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cliplens
from cliplens.errors import UsageError
from cliplens.inputs.demo_data import NEW_SHAPES, generate, write_demo_data
from cliplens.train import FINE_TUNED, TrainConfig, WisePoint, search_alpha, train

STEPS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    return {"train": write_demo_data(root / "train", 96, seed=31, shapes=NEW_SHAPES),
            "new": write_demo_data(root / "new", 48, seed=32, shapes=NEW_SHAPES),
            "keep": write_demo_data(root / "keep", 48, seed=33)}


def _config(data, out, **kw):
    settings = dict(pairs=str(data["train"]), out=str(out), init="demo", steps=STEPS, batch_size=32, lr=1e-3,
                    save_every=2, eval_new=str(data["new"]))
    return TrainConfig(**{**settings, **kw})


@pytest.fixture(scope="module")
def wise_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("wise") / "model"
    rows = []
    result = train(_config(data, out, wise="auto", eval_keep=str(data["keep"])), on_evaluation=rows.append)
    return out, result, rows


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _top1(folder, dataset):
    encoder = cliplens.load_model(str(folder), backend="torch", precision="fp32", cache=False)
    return cliplens.evaluate(str(dataset), encoder, templates="default", use_cache=False).report["zero_shot"]["top1"]


def test_held_out_figures_are_what_eval_measures_on_the_saved_checkpoint(wise_run, data):
    out, result, rows = wise_run
    report = json.loads((out / "train_report.json").read_text())
    steps = [row["step"] for row in report["evaluations"]]
    assert steps == [0, 2, 4]  # before training, at each save, at the end
    assert [r for r in rows if "alpha" not in r] == report["evaluations"]  # heard as they were made
    original = report["original"]
    assert original["new"] == pytest.approx(_top1(cliplens.resolve_model_dir("demo"), data["new"]))
    assert original["keep"] == pytest.approx(_top1(cliplens.resolve_model_dir("demo"), data["keep"]))
    assert report["fine_tuned"]["new"] == pytest.approx(_top1(out / FINE_TUNED, data["new"]))
    assert report["final"]["keep"] == pytest.approx(_top1(out, data["keep"]))
    assert report["new_words"] and set(report["new_words"]) >= {"heart", "hexagon"}
    assert report["grown_rows"] == 0  # the demo model's spare slots took the new words
    assert report["trained_parameters"] == report["total_parameters"]
    assert report["checkpoint_bytes"] == (out / FINE_TUNED / "model.safetensors").stat().st_size


def test_wise_auto_takes_the_best_new_domain_figure_within_the_keep_bound(wise_run):
    out, result, _ = wise_run
    wise = result.report["wise"]
    curve = [WisePoint(**p) for p in wise["curve"]]
    assert {0.0, 0.5, 1.0} <= {p.alpha for p in curve}
    original_keep = result.report["original"]["keep"]
    allowed = [p for p in curve if (original_keep - p.keep) * 100 <= 2.0 + 1e-9]
    assert wise["alpha"] in [p.alpha for p in allowed]
    assert wise["new"] == max(p.new for p in allowed)
    assert (original_keep - wise["keep"]) * 100 <= 2.0 + 1e-9
    alpha_zero = next(p for p in curve if p.alpha == 0.0)
    assert alpha_zero.new == result.report["original"]["new"] and alpha_zero.keep == original_keep


def test_wise_weights_are_the_interpolation_and_load_in_transformers(wise_run):
    from transformers import AutoModel, AutoTokenizer

    out, result, _ = wise_run
    alpha = result.report["wise"]["alpha"]
    tuned, mixed = _weights(out / FINE_TUNED), _weights(out)
    original = AutoModel.from_pretrained(cliplens.resolve_model_dir("demo")).state_dict()
    key = "vision_model.encoder.layers.0.mlp.fc1.weight"
    torch.testing.assert_close(mixed[key], torch.lerp(original[key], tuned[key], alpha))
    model = AutoModel.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        features = model.get_text_features(**tokenizer(["a red heart"], return_tensors="pt")).pooler_output
    ours = cliplens.load_model(str(out), backend="torch", precision="fp32", cache=False).encode_texts(["a red heart"])
    np.testing.assert_allclose(torch.nn.functional.normalize(features, dim=-1).numpy(), ours, atol=1e-5)


def test_wise_at_zero_answers_as_the_original_did(data, tmp_path):
    out = tmp_path / "zero"
    train(_config(data, out, steps=2, save_every=0, wise="0"))
    images = [s.image for s in generate(6, seed=5)]
    texts = ["a red circle", "three blue stars on a white background"]
    original = cliplens.load_model("demo", backend="torch", precision="fp32", cache=False)
    at_zero = cliplens.load_model(str(out), backend="torch", precision="fp32", cache=False)
    np.testing.assert_allclose(at_zero.encode_texts(texts), original.encode_texts(texts), atol=1e-6)
    np.testing.assert_allclose(at_zero.encode_images(images), original.encode_images(images), atol=1e-6)
    assert not np.allclose(cliplens.load_model(str(out / FINE_TUNED), backend="torch", precision="fp32",
                                               cache=False).encode_texts(texts), original.encode_texts(texts))


def test_a_resumed_wise_run_equals_the_straight_one(wise_run, data, tmp_path):
    straight, result, _ = wise_run

    class Stop(Exception):
        pass

    def stop(step, model):
        raise Stop

    config = _config(data, tmp_path / "resumed", wise="auto", eval_keep=str(data["keep"]))
    with pytest.raises(Stop):
        train(config, on_checkpoint=stop)
    assert (tmp_path / "resumed" / FINE_TUNED / "trainer_state.pt").exists()
    resumed = train(config, resume=True)
    a, b = _weights(straight), _weights(tmp_path / "resumed")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    assert resumed.report["evaluations"] == result.report["evaluations"]
    assert resumed.report["wise"]["alpha"] == result.report["wise"]["alpha"]


def test_search_alpha_refines_around_the_best_point_and_honours_the_bound():
    def evaluate(alpha):  # new-domain accuracy rises with alpha; keep falls past 0.3
        return WisePoint(alpha, new=0.2 + 0.6 * alpha, keep=1.0 - max(0.0, alpha - 0.3) * 0.5)

    chosen, curve = search_alpha(evaluate, original_keep=1.0, bound=2.0)
    assert chosen.alpha == pytest.approx(0.3)  # 0.35 loses 2.5 points: over the bound
    assert 0.35 in [p.alpha for p in curve] and 0.25 in [p.alpha for p in curve]
    generous, _ = search_alpha(evaluate, original_keep=1.0, bound=100.0)
    assert generous.alpha == 1.0
    with pytest.raises(UsageError, match="at least 0"):
        search_alpha(evaluate, original_keep=1.0, bound=-1)


def test_freeze_image_leaves_the_image_tower_as_it_was(data, tmp_path):
    result = train(_config(data, tmp_path / "lit", freeze="image", save_every=0))
    before, after = _weights(cliplens.resolve_model_dir("demo")), _weights(tmp_path / "lit")
    vision = [k for k in before if k.startswith(("vision_model.", "visual_projection."))]
    text = [k for k in before if k.startswith(("text_model.", "text_projection."))]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in text)
    expected = sum(after[k].numel() for k in text) + 1  # and the temperature
    assert result.report["trained_parameters"] == expected
    assert result.report["method"] == "freeze image"


def test_freeze_text_still_teaches_the_new_words(data, tmp_path):
    from transformers import AutoTokenizer

    result = train(_config(data, tmp_path / "frozen-text", freeze="text", save_every=0))
    before, after = _weights(cliplens.resolve_model_dir("demo")), _weights(tmp_path / "frozen-text")
    key = "text_model.embeddings.token_embedding.weight"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "frozen-text")
    new_ids = tokenizer.convert_tokens_to_ids(result.report["new_words"])
    old_ids = [i for i in range(before[key].shape[0]) if i not in new_ids]
    assert torch.equal(before[key][old_ids], after[key][old_ids])
    assert not torch.equal(before[key][new_ids], after[key][new_ids])
    others = [k for k in before if k.startswith(("text_model.", "text_projection.")) and k != key]
    assert all(torch.equal(before[k], after[k]) for k in others)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("vision_model."))


@pytest.fixture(scope="module")
def lora_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "adapter"
    return out, train(_config(data, out, lora=8))


def test_lora_saves_only_a_small_adapter_that_cliplens_and_transformers_load(lora_run, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    out, result = lora_run
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    full = (cliplens.resolve_model_dir("demo") / "model.safetensors").stat().st_size
    assert result.report["checkpoint_bytes"] == (out / "adapter_model.safetensors").stat().st_size
    assert result.report["checkpoint_bytes"] <= 0.1 * full
    assert result.report["trained_parameters"] < 0.1 * result.report["total_parameters"]
    texts = ["a red heart", "two blue hexagons"]
    images = [s.image for s in generate(4, seed=9, shapes=NEW_SHAPES)]
    ours = cliplens.load_model(str(out), backend="torch", precision="fp32", cache=False)
    model, tokenizer = AutoModel.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)  # peft's own path
    assert type(model).__name__ == "CLIPModel"
    with torch.no_grad():
        theirs = model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt")).pooler_output
    np.testing.assert_allclose(torch.nn.functional.normalize(theirs, dim=-1).numpy(), ours.encode_texts(texts),
                               atol=1e-5)
    original = cliplens.load_model("demo", backend="torch", precision="fp32", cache=False)
    assert not np.allclose(ours.encode_images(images), original.encode_images(images), atol=1e-4)
    merged = cliplens.merge_lora(out, tmp_path / "merged")
    assert (merged / "model.safetensors").exists() and (merged / "config.json").exists()
    plain = cliplens.load_model(str(merged), backend="torch", precision="fp32", cache=False)
    np.testing.assert_allclose(plain.encode_images(images), ours.encode_images(images), atol=1e-5)


def test_lora_resume_equals_a_straight_run(data, lora_run, tmp_path):
    from safetensors.torch import load_file

    straight, _ = lora_run

    class Stop(Exception):
        pass

    def stop(step, model):
        raise Stop

    config = _config(data, tmp_path / "resumed", lora=8)
    with pytest.raises(Stop):
        train(config, on_checkpoint=stop)
    result = train(config, resume=True)
    a, b = load_file(str(straight / "adapter_model.safetensors")), load_file(str(tmp_path / "resumed" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    assert [row["step"] for row in result.report["evaluations"]] == [0, 2, 4]


def test_lora_refuses_more_new_words_than_spare_slots(tmp_path):
    pairs = tmp_path / "pairs.csv"
    image = tmp_path / "a.png"
    next(generate(1, seed=1)).image.save(image)
    words = " ".join(f"zq{i}" for i in range(70))
    pairs.write_text(f"path,caption\n{image},{words}\n{image},a red circle\n")
    with pytest.raises(UsageError, match="70 words.*room for 64"):
        train(TrainConfig(pairs=str(pairs), out=str(tmp_path / "o"), init="demo", steps=1, batch_size=2, lora=4))


@pytest.mark.parametrize("settings, parameter, message", [
    ({"wise": "1.5"}, "wise", "from 0"),
    ({"wise": "lots"}, "wise", "a number"),
    ({"wise": "auto", "eval_new": None}, "wise", "held-out"),
    ({"freeze": "both"}, "freeze", "choose from"),
    ({"freeze": "image", "lora": 4}, "freeze", "one of freeze and lora"),
    ({"lora": 4, "wise": "0.5"}, "wise", "scaling"),
    ({"init": None, "freeze": "image"}, "freeze", "init"),
])
def test_settings_that_cannot_go_together_are_refused_before_any_work(data, tmp_path, settings, parameter, message):
    with pytest.raises(UsageError, match=message) as caught:
        train(_config(data, tmp_path / "never", **settings))
    assert caught.value.parameter == parameter
    assert not (tmp_path / "never").exists()


def test_a_model_without_a_keep_set_says_so(tiny_clip_dir, data, tmp_path):
    result = train(TrainConfig(pairs=str(data["train"]), out=str(tmp_path / "t"), init=str(tiny_clip_dir), steps=1,
                               batch_size=16, save_every=0, eval_new=str(data["new"])))
    assert result.report["eval"]["keep"] is None
    assert "not measured" in result.report["eval"]["keep_note"]
    assert result.report["original"]["keep"] is None and result.report["original"]["new"] is not None


def test_cli_fine_tune_reports_refits_calibration_and_merges(cli, data, tmp_path):
    out = tmp_path / "ft"
    done = cli("train", data["train"], "--out", out, "--init", "demo", "--steps", "2", "--batch-size", "32",
               "--save-every", "0", "--eval-new", data["new"], "--wise", "auto", "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    report = summary["report"]
    assert report["eval"]["keep_note"] == "none given: the demo model's own shapes"
    assert report["calibration"]["refitted"] is True
    calibration = json.loads((out / "cliplens_calibration.json").read_text())
    new_labels = {row.split(",")[3] for row in data["new"].read_text().splitlines()[1:]}
    assert set(calibration["classes"]) >= new_labels | {"red circle"}  # the new domain and the kept one
    for name in ("train_report.json", "train_report.html", "train_curves.png", "wise_curve.png"):
        assert (out / name).exists(), name
    assert "Weight-space ensembling" in (out / "train_report.html").read_text()
    classified = cli("classify", data["new"].parent / "images" / "000" / "0000000.png", "red heart", "blue ring",
                     "--model", out, "--json")
    assert classified.returncode == 0, classified.stderr

    adapter = tmp_path / "adapter"
    done = cli("train", data["train"], "--out", adapter, "--init", "demo", "--steps", "2", "--batch-size", "32",
               "--save-every", "0", "--lora", "4", "--no-calibrate")
    assert done.returncode == 0, done.stderr
    assert "no calibration: not asked for; the one of demo belonged to other weights" in done.stderr
    merged = cli("merge", adapter, "--out", tmp_path / "merged", "--json")
    assert merged.returncode == 0, merged.stderr
    assert (tmp_path / "merged" / "model.safetensors").exists()
    again = cli("merge", adapter, "--out", tmp_path / "merged")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    bad = cli("train", data["train"], "--out", tmp_path / "bad", "--init", "demo", "--lora", "4", "--freeze", "image")
    assert bad.returncode == 2 and "--freeze" in bad.stderr and "Traceback" not in bad.stderr
