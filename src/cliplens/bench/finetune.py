"""Fine-tuning without forgetting, measured on the demo model (``cliplens bench finetune``).

The demo model knows five shapes in six colours. It is fine-tuned on six shapes it has never seen (hearts,
hexagons, diamonds, arrows, rings and moons, words and all) four ways: plainly, plainly followed by
``wise auto``, with the image tower frozen (LiT) and with rank-8 LoRA adapters. ``wise auto`` picks α
on held-out *evaluation* sets; every figure reported is measured on separate *test* sets (new shapes and
the demo's own shapes, other seeds), so the choice of α is not graded on the images that chose it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..evaluate import evaluate
from ..inputs.demo_data import NEW_SHAPES, write_demo_data
from ..models import load_model
from ..train import FINE_TUNED, TrainConfig, train

StatusFn = Callable[[str], None]
SEEDS = {"train": 101, "eval_new": 102, "eval_keep": 103, "test_new": 104, "test_keep": 105}


@dataclass(frozen=True)
class FinetuneSettings:
    train_images: int = 3000
    eval_images: int = 300
    test_images: int = 600
    steps: int = 300
    batch_size: int = 128
    lr: float = 5e-4
    lora_rank: int = 8
    lora_lr: float = 2e-3  # adapters start at zero and are small: they take a larger step, as LoRA usually does
    seed: int = 0


def _data(work: Path, settings: FinetuneSettings) -> dict[str, Path]:
    sets = {"train": (settings.train_images, NEW_SHAPES), "eval_new": (settings.eval_images, NEW_SHAPES),
            "eval_keep": (settings.eval_images, None), "test_new": (settings.test_images, NEW_SHAPES),
            "test_keep": (settings.test_images, None)}
    paths = {}
    for name, (n, shapes) in sets.items():
        folder = work / "data" / f"{name}-{n}-{SEEDS[name]}"
        pairs = folder / "pairs.csv"
        if not pairs.exists():
            kwargs = {"shapes": shapes} if shapes else {}
            write_demo_data(folder, n, seed=SEEDS[name], **kwargs)
        paths[name] = pairs
    return paths


def _test(model: str | Path, data: dict[str, Path]) -> dict[str, float]:
    encoder = load_model(str(model), backend="torch", precision="fp32", cache=False)
    try:
        return {role: evaluate(str(data[f"test_{role}"]), encoder, templates="default",
                               use_cache=False).report["zero_shot"]["top1"] for role in ("new", "keep")}
    finally:
        encoder.close()


def finetune_benchmark(work: str | Path, settings: FinetuneSettings = FinetuneSettings(), *,
                       on_status: StatusFn | None = None) -> dict:
    """Run the four fine-tunes in ``work`` and return the figures (see the module's note)."""
    work = Path(work)
    say = on_status or (lambda message: None)
    say("generating the data")
    data = _data(work, settings)
    original = _test("demo", data)
    common = dict(pairs=str(data["train"]), init="demo", steps=settings.steps, batch_size=settings.batch_size,
                  seed=settings.seed, save_every=0, eval_new=str(data["eval_new"]), eval_keep=str(data["eval_keep"]))
    runs = {"plain + wise auto": TrainConfig(out=str(work / "wise"), lr=settings.lr, wise="auto", **common),
            "freeze image": TrainConfig(out=str(work / "freeze-image"), lr=settings.lr, freeze="image", **common),
            f"lora {settings.lora_rank}": TrainConfig(out=str(work / f"lora-{settings.lora_rank}"), lr=settings.lora_lr,
                                                      lora=settings.lora_rank, **common)}
    variants: dict[str, dict] = {}
    for name, config in runs.items():
        say(f"fine-tuning: {name}")
        started = time.perf_counter()
        result = train(config)
        seconds = time.perf_counter() - started
        report = result.report
        figures = {"trained_parameters": report["trained_parameters"], "checkpoint_bytes": report["checkpoint_bytes"],
                   "train_seconds": round(seconds, 1), "lr": config.lr}
        if config.wise:
            variants["plain"] = {**_test(Path(config.out) / FINE_TUNED, data), **figures}
            say("testing")
            variants["wise auto"] = {**_test(config.out, data), **figures, "alpha": report["wise"]["alpha"]}
        else:
            variants[name] = {**_test(config.out, data), **figures}
    for figures in variants.values():
        figures["new_gain"] = figures["new"] - original["new"]
        figures["keep_vs_original"] = figures["keep"] - original["keep"]
    plain, wise, lora = variants["plain"], variants["wise auto"], variants[f"lora {settings.lora_rank}"]
    gain_share = wise["new_gain"] / plain["new_gain"] if plain["new_gain"] > 0 else None
    return {
        "settings": settings.__dict__, "original": original, "variants": variants,
        "targets": {
            "wise_keep_within_2_points": wise["keep_vs_original"] >= -0.02,
            "wise_share_of_plain_gain": gain_share,
            "wise_share_at_least_80_percent": gain_share is not None and gain_share >= 0.8,
            "lora_checkpoint_share": lora["checkpoint_bytes"] / plain["checkpoint_bytes"],
            "lora_checkpoint_at_most_10_percent": lora["checkpoint_bytes"] <= 0.1 * plain["checkpoint_bytes"],
        },
    }
