"""``cliplens demo-data`` and ``cliplens train``: synthetic data and contrastive training."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional

import typer

import cliplens
from cliplens.errors import UsageError
from cliplens.cli.common import (JsonOpt, OverwriteOpt, add, at_least, between, check_output, emit_json, err,
                                 progress, rate_updater, report_skipped)


def register(app: typer.Typer) -> None:
    add(app, "demo-data", demo_data)
    add(app, "train", train)
    add(app, "merge", merge)


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
              shapes: str = typer.Option("demo", "--shapes", metavar="SET",
                                         help="demo (circle, square, triangle, star, cross: what the demo model "
                                              "knows), new (heart, hexagon, diamond, arrow, ring, moon: what it "
                                              "does not) or a comma-separated list of them."),
              overwrite: bool = OverwriteOpt, as_json: bool = JsonOpt) -> None:
    """Write synthetic shape images and a pairs.csv of natural captions (path, caption, label, ...): the demo
    model's domain, or new shapes to fine-tune it on."""
    chosen = _shapes(shapes)
    check_output(out_dir, "out_dir", overwrite=overwrite, folder=True)
    with progress("generating") as bar:
        task = bar.add_task("generating", total=n, rate="")
        update = rate_updater(bar, task, "img")
        pairs = cliplens.write_demo_data(out_dir, n, seed=seed, size=size, mixed=mixed, words=words, shapes=chosen,
                                         on_progress=lambda done: update(done, n))
    if as_json:
        emit_json({"pairs": cliplens.display_path(pairs), "count": n, "seed": seed, "mixed": mixed, "words": words,
                   "shapes": list(chosen)})
    else:
        err.print(f"wrote {n} pairs → {cliplens.display_path(pairs)}", highlight=False)


def _shapes(value: str) -> tuple[str, ...]:
    sets = {"demo": cliplens.DEMO_SHAPES, "new": cliplens.NEW_SHAPES}
    if value in sets:
        return sets[value]
    chosen = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    known = cliplens.DEMO_SHAPES + cliplens.NEW_SHAPES
    unknown = [s for s in chosen if s not in known]
    if unknown or not chosen:
        raise UsageError(f"choose demo, new or shapes from {', '.join(known)}", value=value, parameter="shapes")
    return chosen


def train(pairs: Path = typer.Argument(..., help="CSV or JSONL of path,caption."),
          out_dir: Path = typer.Option(..., "--out", "-o", metavar="DIR",
                                       help="Checkpoint folder (Hugging Face format; with --lora, the adapter)."),
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
                                         help="Save a checkpoint (and measure the held-out sets) every N steps "
                                              "(0: only at the end)."),
          hard_targets: bool = typer.Option(False, "--hard-targets",
                                            help="Treat identical captions in a batch as negatives."),
          eval_new: Optional[Path] = typer.Option(
              None, "--eval-new", metavar="DATASET",
              help="Held-out images of the new domain (class folders or CSV of path,label): zero-shot top-1 before "
                   "training, at every save and at the end."),
          eval_keep: Optional[Path] = typer.Option(
              None, "--eval-keep", metavar="DATASET",
              help="Held-out images of what the model should keep knowing (default for the demo model: its own "
                   "shapes)."),
          wise: Optional[str] = typer.Option(
              None, "--wise", metavar="ALPHA|auto",
              help="Write the weights interpolated between the original (0) and the fine-tuned (1) ones; auto picks "
                   "ALPHA on the held-out sets. The fine-tuned weights stay in OUT/fine-tuned."),
          wise_bound: float = typer.Option(2.0, "--wise-bound", metavar="POINTS", callback=at_least(0),
                                           help="Keep-set top-1 points --wise auto may give up for the new domain."),
          freeze: Optional[str] = typer.Option(None, "--freeze", metavar="TOWER",
                                               help="Leave one tower as it is: image (LiT: tune the text side) or "
                                                    "text."),
          lora: int = typer.Option(0, "--lora", metavar="RANK", callback=at_least(0),
                                   help="Train low-rank adapters of this rank (peft) and save only them; "
                                        "cliplens merge makes a plain checkpoint."),
          adversarial: float = typer.Option(0.0, "--adversarial", metavar="RADIUS", callback=at_least(0),
                                            help="Adversarial training: learn from each batch moved within this L2 "
                                                 "radius (pixels in 0-1) to raise the loss; a robust model, whose "
                                                 "gradients dream draws recognisable shapes with."),
          adversarial_steps: int = typer.Option(3, "--adversarial-steps", metavar="N", callback=at_least(1),
                                                help="Gradient steps of each --adversarial move."),
          calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate",
                                         help="Refit the none-of-these calibration on the held-out sets at the end."),
          resume: bool = typer.Option(False, "--resume", help="Continue the run saved in --out."),
          overwrite: bool = OverwriteOpt, as_json: bool = JsonOpt) -> None:
    """Train or fine-tune a CLIP with the symmetric contrastive loss and a learnable temperature.

    A fine-tune (--init) measures what it learns and what it keeps on held-out sets (train_report.json and
    train_report.html in OUT), and can keep the original's knowledge with --wise, --freeze or --lora.
    """
    if not resume:
        check_output(out_dir, "out_dir", overwrite=overwrite, folder=True)
    cfg = cliplens.TrainConfig(pairs=str(pairs), out=str(out_dir), preset=config, init=init, steps=steps,
                               batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                               save_every=save_every, soft_targets=not hard_targets,
                               eval_new=str(eval_new) if eval_new else None,
                               eval_keep=str(eval_keep) if eval_keep else None, freeze=freeze, lora=lora, wise=wise,
                               wise_bound=wise_bound, adversarial=adversarial, adversarial_steps=adversarial_steps)
    cliplens.check_train_config(cfg)
    held: dict = {}
    with progress("training", unit="steps") as bar:
        load_task = bar.add_task("loading images", total=None, rate="")
        step_task = bar.add_task("training", total=steps, rate="", visible=False)
        load_update = rate_updater(bar, load_task, "img")

        def on_step(s) -> None:
            bar.update(step_task, visible=True, completed=s.step,
                       rate=f"loss {s.loss:.3f}  scale {s.logit_scale:.1f}{_held_out(held)}")

        def on_evaluation(row: dict) -> None:
            if "alpha" in row:
                bar.update(step_task, description="choosing α", rate=f"α {row['alpha']:g}{_held_out(row)}")
            else:
                held.update(row)
                err.print(f"step {row['step']}:{_held_out(row)}", highlight=False)

        result = cliplens.train_model(cfg, resume=resume, on_step=on_step, on_load=load_update,
                                      on_evaluation=on_evaluation)
    report_skipped(result.skipped)
    report = result.report
    if init:
        report["calibration"] = _calibration(out_dir, cfg, report, calibrate)
        page = cliplens.write_train_report(report, out_dir)
    summary = {"out": cliplens.display_path(result.out), "steps": result.steps, "final_loss": result.final_loss,
               "images": result.images, "skipped": len(result.skipped)}
    if as_json:
        emit_json({**summary, **({"report": report} if init else {})})
    else:
        err.print(f"trained {result.steps} steps on {result.images} images (final loss {result.final_loss:.4f}) "
                  f"→ {summary['out']}", highlight=False)
        if init:
            _print_fine_tune(report)
            err.print(f"{report['calibration']['note']}\nreport → {cliplens.display_path(page)}", highlight=False)
    if result.skipped:
        raise typer.Exit(1)


def _held_out(row: dict) -> str:
    parts = [f"{role} {row[role] * 100:.1f}%" for role in ("new", "keep") if row.get(role) is not None]
    return ("  " + "  ".join(parts)) if parts else ""


def _print_fine_tune(report: dict) -> None:
    original, tuned, final = report.get("original") or {}, report.get("fine_tuned") or {}, report.get("final") or {}
    for role, name in (("new", "new domain"), ("keep", "keep set")):
        if original.get(role) is not None:
            line = f"{name} top-1: {original[role] * 100:.1f}% before → {tuned[role] * 100:.1f}% fine-tuned"
            if "wise" in report:
                line += f" → {final[role] * 100:.1f}% at α {report['wise']['alpha']:g}"
            err.print(line, highlight=False)
    if report["eval"].get("keep_note"):
        err.print(f"keep set: {report['eval']['keep_note']}", highlight=False)


def _calibration(out_dir: Path, cfg, report: dict, wanted: bool) -> dict:
    """Refit the none-of-these calibration of the new weights on the held-out sets, or say why not."""
    datasets = [d for d in (cfg.eval_new, cfg.eval_keep) if d]
    generated = (report["eval"].get("keep") or {}).get("generated")
    if wanted and datasets:
        with progress("calibrating") as bar, tempfile.TemporaryDirectory() as tmp:
            if generated:  # the demo model's own shapes, as the held-out evaluation generated them
                datasets.append(str(cliplens.write_demo_data(Path(tmp), generated["images"], seed=generated["seed"])))
            task = bar.add_task("calibrating", total=None, rate="")
            encoder = cliplens.load_model(str(out_dir), cache=False)
            fitted = cliplens.calibrate(datasets, encoder, on_progress=rate_updater(bar, task, "img"))
            encoder.close()
        path = fitted.calibration.save(out_dir / cliplens.CALIBRATION_FILE)
        return {"refitted": True, "file": cliplens.display_path(path), "datasets": datasets[:2] + (
            ["the demo model's shapes"] if len(datasets) > 2 else []),
            "note": f"calibration refitted on the held-out sets ({fitted.calibration.report['images']} images) "
                    f"→ {cliplens.display_path(path)}"}
    why = "not asked for" if not wanted else "no held-out sets were given"
    had = report.get("original_calibration")
    note = (f"no calibration: {why}; {'the one of ' + cfg.init + ' belonged to other weights. ' if had else ''}"
            f"Fit one with: cliplens calibrate DATASET --model {cliplens.display_path(out_dir)} "
            f"--out {cliplens.display_path(out_dir / cliplens.CALIBRATION_FILE)}")
    return {"refitted": False, "note": note}


def merge(adapter: Path = typer.Argument(..., help="A LoRA adapter folder written by cliplens train --lora."),
          out_dir: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Folder for the merged checkpoint."),
          overwrite: bool = OverwriteOpt, as_json: bool = JsonOpt) -> None:
    """Merge a LoRA adapter into its base model: a plain Hugging Face checkpoint any tool loads."""
    check_output(out_dir, "out_dir", overwrite=overwrite, folder=True)
    with err.status("merging"):
        path = cliplens.merge_lora(adapter, out_dir)
    if as_json:
        emit_json({"out": cliplens.display_path(path), "adapter": cliplens.display_path(adapter)})
    else:
        err.print(f"merged {cliplens.display_path(adapter)} into its base → {cliplens.display_path(path)}",
                  highlight=False)
