"""``cliplens demo-data`` and ``cliplens train``: synthetic data and contrastive training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import cliplens
from cliplens.cli.common import (JsonOpt, OverwriteOpt, add, at_least, between, check_output, emit_json, err,
                                 progress, rate_updater, report_skipped)


def register(app: typer.Typer) -> None:
    add(app, "demo-data", demo_data)
    add(app, "train", train)


def demo_data(out_dir: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Output folder."),
              n: int = typer.Option(1000, "-n", metavar="N", callback=at_least(1),
                                    help="Number of image–caption pairs."),
              seed: int = typer.Option(0, "--seed", metavar="N", help="Random seed: the same seed, the same data."),
              size: int = typer.Option(64, "--size", metavar="PX", callback=at_least(16),
                                       help="Image side in pixels."),
              mixed: float = typer.Option(0.0, "--mixed", metavar="SHARE", callback=between(0, 1),
                                          help="Share of images holding two different shapes."),
              words: float = typer.Option(0.0, "--words", metavar="SHARE", callback=between(0, 1),
                                          help="Share of images with a shape or colour name written on a sign."),
              overwrite: bool = OverwriteOpt, as_json: bool = JsonOpt) -> None:
    """Write synthetic shape images and a pairs.csv of natural captions (the demo model's domain)."""
    check_output(out_dir, "out_dir", overwrite=overwrite, folder=True)
    with progress("generating") as bar:
        task = bar.add_task("generating", total=n, rate="")
        update = rate_updater(bar, task, "img")
        pairs = cliplens.write_demo_data(out_dir, n, seed=seed, size=size, mixed=mixed, words=words,
                                         on_progress=lambda done: update(done, n))
    if as_json:
        emit_json({"pairs": cliplens.display_path(pairs), "count": n, "seed": seed, "mixed": mixed, "words": words})
    else:
        err.print(f"wrote {n} pairs → {cliplens.display_path(pairs)}", highlight=False)


def train(pairs: Path = typer.Argument(..., help="CSV or JSONL of path,caption."),
          out_dir: Path = typer.Option(..., "--out", "-o", metavar="DIR",
                                       help="Checkpoint folder (Hugging Face format)."),
          config: str = typer.Option("demo", "--config", metavar="NAME",
                                     help="Architecture for training from scratch: demo, small or a JSON file."),
          init: Optional[str] = typer.Option(None, "--init", metavar="MODEL",
                                             help="Fine-tune this model instead of training from scratch."),
          steps: int = typer.Option(1000, "--steps", metavar="N", callback=at_least(1),
                                    help="Optimiser steps (one batch each)."),
          batch_size: int = typer.Option(256, "--batch-size", metavar="N", callback=at_least(2),
                                         help="Image–caption pairs per step."),
          lr: float = typer.Option(1e-3, "--lr", metavar="RATE", help="Peak learning rate of the one-cycle schedule."),
          weight_decay: float = typer.Option(0.1, "--weight-decay", metavar="W", help="AdamW's weight decay."),
          seed: int = typer.Option(0, "--seed", metavar="N", help="Random seed of the weights and the batch order."),
          save_every: int = typer.Option(500, "--save-every", metavar="N", callback=at_least(0),
                                         help="Save a checkpoint every N steps (0: only at the end)."),
          hard_targets: bool = typer.Option(False, "--hard-targets",
                                            help="Treat identical captions in a batch as negatives."),
          resume: bool = typer.Option(False, "--resume", help="Continue the run saved in --out."),
          overwrite: bool = OverwriteOpt, as_json: bool = JsonOpt) -> None:
    """Train or fine-tune a CLIP with the symmetric contrastive loss and a learnable temperature."""
    if not resume:
        check_output(out_dir, "out_dir", overwrite=overwrite, folder=True)
    cfg = cliplens.TrainConfig(pairs=str(pairs), out=str(out_dir), preset=config, init=init, steps=steps,
                               batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                               save_every=save_every, soft_targets=not hard_targets)
    with progress("training", unit="steps") as bar:
        load_task = bar.add_task("loading images", total=None, rate="")
        step_task = bar.add_task("training", total=steps, rate="", visible=False)
        load_update = rate_updater(bar, load_task, "img")

        def on_step(s) -> None:
            bar.update(step_task, visible=True, completed=s.step,
                       rate=f"loss {s.loss:.3f}  scale {s.logit_scale:.1f}")

        result = cliplens.train_model(cfg, resume=resume, on_step=on_step, on_load=load_update)
    report_skipped(result.skipped)
    summary = {"out": cliplens.display_path(result.out), "steps": result.steps, "final_loss": result.final_loss,
               "images": result.images, "skipped": len(result.skipped)}
    if as_json:
        emit_json(summary)
    else:
        err.print(f"trained {result.steps} steps on {result.images} images (final loss {result.final_loss:.4f}) "
                  f"→ {summary['out']}", highlight=False)
    if result.skipped:
        raise typer.Exit(1)
