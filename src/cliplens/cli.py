"""The ``cliplens`` command: thin Typer commands over the public Python API.

Results go to stdout, progress and messages to stderr. Exit codes: 0 success, 1 partial (some
inputs failed and were reported), 2 usage or fatal error.
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

import cliplens
from cliplens.cli_bench import bench_app
from cliplens.cli_caption import register as register_caption_commands
from cliplens.cli_curate import register as register_curate_commands
from cliplens.cli_dream import register as register_dream_commands
from cliplens.cli_eval import register as register_eval_commands
from cliplens.cli_index import register as register_index_commands
from cliplens.cli_serve import register as register_serve_commands
from cliplens.cli_common import (BackendOpt, DeviceOpt, JsonOpt, ModelOpt, PrecisionOpt, command, emit_json, err,
                                 load_model_with_status, out, progress, rate_updater, state)
from cliplens.errors import UsageError

app = typer.Typer(help="CLIP-family image–text models: classify, embed, train and more.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
models_app = typer.Typer(help="List, download and locate models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
register_index_commands(app)
register_curate_commands(app)
register_caption_commands(app)
register_serve_commands(app)
register_eval_commands(app)
register_dream_commands(app)

@app.callback(invoke_without_command=True)
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
         version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    """cliplens: CLIP-family image–text models for classification, captions, search, ranking and evaluation."""
    state["debug"] = debug
    if version:
        print(cliplens.__version__)
        raise typer.Exit()


# --- models ------------------------------------------------------------------------------------------

@models_app.command("list")
@command
def models_list(as_json: bool = JsonOpt) -> None:
    """Aliases (and whether each is available offline) and the models in the Hugging Face cache."""
    entries = cliplens.list_models()
    if as_json:
        emit_json([e.__dict__ for e in entries])
        return
    table = Table("name", "points to", "kind", "offline")
    for e in entries:
        table.add_row(e.name, e.target, e.kind, "yes" if e.available else "no")
    out.print(table)


@models_app.command("pull")
@command
def models_pull(name: str = typer.Argument(..., help="Hub id or alias.")) -> None:
    """Download a model into the Hugging Face cache so it works offline later."""
    from huggingface_hub.utils import enable_progress_bars

    from cliplens.models.registry import ALIASES, download

    target = ALIASES.get(name, name)
    enable_progress_bars()  # a download is long: show its bars
    path = Path(target) if Path(target).is_dir() else download(target)
    cliplens.load_model(str(path), device="cpu", backend="torch", cache=False)  # proves it loads
    print(path)


@models_app.command("path")
@command
def models_path(name: str = typer.Argument(..., help="Hub id, alias or folder.")) -> None:
    """Print the local folder of a model (e.g. of demo); never downloads."""
    print(cliplens.resolve_model_dir(name, allow_download=False))


# --- classify ----------------------------------------------------------------------------------------

@app.command()
@command
def classify(image: str = typer.Argument(..., help="Image file, or a folder or quoted glob for many images."),
             labels: List[str] = typer.Argument(None, help="Candidate labels (or use --labels-file)."),
             labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="Labels, one per line."),
             template: str = typer.Option("a photo of a {}.", "--template", help="Prompt with {} for the label; 'none' for verbatim labels."),
             templates: Optional[str] = typer.Option(None, "--templates", help="Prompt ensemble: imagenet (80 templates), imagenet-7, a file of templates, or none (labels verbatim)."),
             multi_label: bool = typer.Option(False, "--multi-label", help="Independent probability per label (several may fit)."),
             calibration: Optional[Path] = typer.Option(None, "--calibration", help="File from `cliplens calibrate` (default: the one shipped with the model, if any)."),
             coverage: Optional[float] = typer.Option(None, "--coverage", help="Add a conformal prediction set with this coverage, e.g. 0.9 (needs a calibration)."),
             output: Optional[Path] = typer.Option(None, "--output", "-o", help="Many images: write results to FILE.csv or FILE.jsonl."),
             fmt: Optional[str] = typer.Option(None, "--format", help="Many images: print csv or jsonl on stdout."),
             batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
             workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decode threads."),
             model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
             precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Zero-shot classification: how well each label matches, and whether none of them does."""
    from cliplens.prompts import read_labels_file

    label_list = list(labels or [])
    if labels_file is not None:
        label_list += read_labels_file(labels_file)
    if not label_list:
        raise UsageError("give labels after the image, or --labels-file FILE")
    many = Path(image).is_dir() or glob.has_magic(image) or output is not None or fmt is not None
    encoder = load_model_with_status(model, device, backend, precision)
    classifier = cliplens.Classifier(label_list, encoder, template=template, templates=templates,
                                     multi_label=multi_label, calibration=calibration, coverage=coverage)
    if many:
        _classify_many(classifier, image, output, fmt, as_json, batch_size, workers)
        return
    result = classifier.classify(image)
    if as_json:
        emit_json(result.to_dict())
        return
    _print_classification(result, coverage)


def _print_classification(result, coverage: Optional[float]) -> None:
    if result.is_none_of_these:
        hint = f" (it looks more like: {result.looks_like})" if result.looks_like else ""
        out.print(f"[yellow]none of these[/]: {result.none_of_these * 100:.1f}% that no label fits{hint}", highlight=False)
    width = max(len(s.label) for s in result.labels)
    for s in result.labels:
        bar = "█" * round(s.probability * 30)
        out.print(f"{s.label:<{width}}  {s.probability * 100:5.1f}%  [cyan]{bar:<30}[/]  (cos {s.similarity:.3f})",
                  highlight=False)
    if not result.is_none_of_these:
        out.print(f"[dim]none of these: {result.none_of_these * 100:.1f}%[/]", highlight=False)
    if result.prediction_set is not None:
        members = ", ".join(result.prediction_set) or "(empty)"
        out.print(f"prediction set at {coverage:.0%} coverage: {members}", highlight=False)


def _classify_many(classifier, image: str, output: Optional[Path], fmt: Optional[str], as_json: bool,
                   batch_size: Optional[int], workers: Optional[int]) -> None:
    from cliplens.results import ResultWriter, format_for

    sources = cliplens.expand_paths([image])
    if not sources:
        raise UsageError(f"no images found in {image}")
    fmt = format_for(output) if output is not None else (fmt or ("jsonl" if as_json else None))
    stream = output.open("w", newline="", encoding="utf-8") if output is not None else sys.stdout
    writer = ResultWriter(stream, fmt, classifier.labels, classifier.coverage is not None) if fmt else None
    failed = 0
    try:
        with progress("classifying") as bar:
            task = bar.add_task("classifying", total=len(sources), rate="")
            for item in classifier.classify_many(sources, batch_size=batch_size, workers=workers,
                                                 on_progress=rate_updater(bar, task, "img")):
                if isinstance(item, cliplens.ImageLoadError):
                    failed += 1
                    bar.console.print(f"[yellow]skipped[/] {item.source}: {item.reason}", highlight=False)
                if writer is not None:
                    writer.write(item)
                elif not isinstance(item, cliplens.ImageLoadError):
                    answer = (f"none of these ({item.none_of_these:.0%})" if item.is_none_of_these
                              else f"{item.top.label} ({item.top.probability:.0%})")
                    out.print(f"{item.image}\t{answer}", highlight=False)
    finally:
        if output is not None:
            stream.close()
    done = f" → {output}" if output is not None else ""
    err.print(f"classified {len(sources) - failed} image(s), {failed} failed{done}")
    if failed:
        raise typer.Exit(1)


@app.command()
@command
def calibrate(dataset: Path = typer.Argument(..., help="Folder with one sub-folder per class, or a CSV/JSONL of path,label."),
              out_file: Path = typer.Option(..., "--out", "-o", help="Calibration file to write (JSON)."),
              template: str = typer.Option("a photo of a {}.", "--template", help="Prompt with {} for the label; 'none' for verbatim."),
              templates: Optional[str] = typer.Option(None, "--templates", help="Prompt ensemble (as for classify)."),
              batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
              workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decode threads."),
              model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt,
              backend: Optional[str] = BackendOpt, precision: Optional[str] = PrecisionOpt,
              as_json: bool = JsonOpt) -> None:
    """Fit temperature, the none-of-these detector and conformal scores for a model on labelled images."""
    encoder = load_model_with_status(model, device, backend, precision)
    with progress("embedding") as bar:
        task = bar.add_task("embedding", total=None, rate="")
        fitted = cliplens.calibrate(dataset, encoder, template=template, templates=templates, batch_size=batch_size,
                                  workers=workers, on_progress=rate_updater(bar, task, "img"))
    for error in fitted.errors:
        err.print(f"[yellow]skipped[/] {error.source}: {error.reason}", highlight=False)
    path = fitted.calibration.save(out_file)
    report = fitted.calibration.report
    if as_json:
        emit_json({"out": str(path), "model": encoder.name, "skipped": len(fitted.errors), **report})
    else:
        none, q90 = report["none_of_these"], report["conformal"]["0.9"]
        err.print(f"calibrated {encoder.name} on {report['images']} images of {report['classes']} classes "
                  f"(zero-shot top-1 {report['accuracy']:.3f})\n"
                  f"temperature {report['temperature']:.3f}: expected calibration error "
                  f"{report['ece_before']:.4f} → {report['ece_after']:.4f}\n"
                  f"none of these flags {none['flagged_in_domain']:.1%} of images when their class is offered and "
                  f"{none['flagged_out_of_domain']:.1%} when it is not\n"
                  f"90% conformal sets: threshold {q90['quantile']:.4f}, mean size {q90['mean_set_size']:.2f}\n"
                  f"→ {path}", highlight=False)
    if fitted.errors:
        raise typer.Exit(1)


# --- embed -------------------------------------------------------------------------------------------

@app.command()
@command
def embed(paths: List[str] = typer.Argument(None, help="Image files, folders or globs."),
          out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (clip-retrieval layout)."),
          text: List[str] = typer.Option(None, "--text", "-t", help="A text to embed (repeatable)."),
          text_file: Optional[Path] = typer.Option(None, "--text-file", help="Texts to embed, one per line."),
          dtype: str = typer.Option("float32", "--dtype", help="float32 or float16."),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
          workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decode threads."),
          exclude: List[str] = typer.Option(None, "--exclude", help="Glob of paths to leave out (repeatable)."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace embeddings already in --out."),
          model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt, backend: Optional[str] = BackendOpt,
          precision: Optional[str] = PrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Embed images or texts into DIR/img_emb/*.npy (or text_emb/) with metadata/*.parquet."""
    if dtype not in ("float32", "float16"):
        raise UsageError(f"--dtype {dtype}: use float32 or float16")
    texts = list(text or [])
    if text_file is not None:
        if not text_file.is_file():
            raise UsageError(f"--text-file {text_file}: no such file")
        texts += [line.strip() for line in text_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if bool(texts) == bool(paths):
        raise UsageError("give image paths or --text/--text-file (one kind per run)")
    sources = cliplens.expand_paths(paths, exclude=exclude or ()) if paths else []
    if paths and not sources:
        raise UsageError("no images found in " + ", ".join(paths))
    encoder = load_model_with_status(model, device, backend, precision)
    if texts:
        vectors = cliplens.embed_texts(texts, encoder)
        files = cliplens.write_text_embeddings(texts, vectors, out_dir, model=encoder.name, dtype=dtype,
                                               overwrite=overwrite)
        summary = {"kind": "text", "model": encoder.name, "count": len(texts), "failed": 0, "dim": encoder.embed_dim,
                   "out": str(out_dir), "files": [str(f) for f in files]}
    else:
        with progress("embedding") as bar:
            task = bar.add_task("embedding", total=len(sources), rate="")
            result = cliplens.embed_images(sources, encoder, batch_size=batch_size, workers=workers,
                                           on_progress=rate_updater(bar, task, "img"))
        files = cliplens.write_image_embeddings(result, out_dir, dtype=dtype, overwrite=overwrite)
        for error in result.errors:
            err.print(f"[yellow]skipped[/] {error.source}: {error.reason}", highlight=False)
        summary = {"kind": "image", "model": encoder.name, "count": len(result.sources), "failed": len(result.errors),
                   "dim": encoder.embed_dim, "out": str(out_dir), "files": [str(f) for f in files],
                   "errors": [{"path": e.source, "reason": e.reason} for e in result.errors]}
    if as_json:
        emit_json(summary)
    else:
        err.print(f"embedded {summary['count']} {summary['kind']}(s), {summary['failed']} failed → {out_dir}")
    if summary["failed"]:
        raise typer.Exit(1)


# --- demo data and training ------------------------------------------------------------------------

@app.command("demo-data")
@command
def demo_data(out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder."),
              n: int = typer.Option(1000, "-n", min=1, help="Number of image–caption pairs."),
              seed: int = typer.Option(0, "--seed"), size: int = typer.Option(64, "--size", min=16, help="Image side in pixels."),
              mixed: float = typer.Option(0.0, "--mixed", min=0.0, max=1.0,
                                          help="Share of images holding two different shapes."),
              words: float = typer.Option(0.0, "--words", min=0.0, max=1.0,
                                          help="Share of images with a shape or colour name written on a sign."),
              as_json: bool = JsonOpt) -> None:
    """Write synthetic shape images and a pairs.csv of natural captions (the demo model's domain)."""
    from cliplens.demo_data import write_demo_data

    with progress("generating") as bar:
        task = bar.add_task("generating", total=n, rate="")
        update = rate_updater(bar, task, "img")
        pairs = write_demo_data(out_dir, n, seed=seed, size=size, mixed=mixed, words=words,
                                on_progress=lambda done: update(done, n))
    if as_json:
        emit_json({"pairs": str(pairs), "count": n, "seed": seed, "mixed": mixed, "words": words})
    else:
        err.print(f"wrote {n} pairs → {pairs}")


@app.command()
@command
def train(pairs: Path = typer.Argument(..., help="CSV or JSONL of path,caption."),
          out_dir: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder (Hugging Face format)."),
          config: str = typer.Option("demo", "--config", help="Architecture for training from scratch: demo, small or a JSON file."),
          init: Optional[str] = typer.Option(None, "--init", help="Fine-tune this model instead of training from scratch."),
          steps: int = typer.Option(1000, "--steps", min=1), batch_size: int = typer.Option(256, "--batch-size", min=2),
          lr: float = typer.Option(1e-3, "--lr"), weight_decay: float = typer.Option(0.1, "--weight-decay"),
          seed: int = typer.Option(0, "--seed"), save_every: int = typer.Option(500, "--save-every", min=0),
          hard_targets: bool = typer.Option(False, "--hard-targets", help="Treat identical captions in a batch as negatives."),
          resume: bool = typer.Option(False, "--resume", help="Continue the run saved in --out."),
          as_json: bool = JsonOpt) -> None:
    """Train or fine-tune a CLIP with the symmetric contrastive loss and a learnable temperature."""
    from cliplens.train import TrainConfig
    from cliplens.train import train as run_training

    cfg = TrainConfig(pairs=str(pairs), out=str(out_dir), preset=config, init=init, steps=steps, batch_size=batch_size,
                      lr=lr, weight_decay=weight_decay, seed=seed, save_every=save_every, soft_targets=not hard_targets)
    with progress("training", unit="steps") as bar:
        load_task = bar.add_task("loading images", total=None, rate="")
        step_task = bar.add_task("training", total=steps, rate="", visible=False)
        load_update = rate_updater(bar, load_task, "img")

        def on_step(s) -> None:
            bar.update(step_task, visible=True, completed=s.step,
                       rate=f"loss {s.loss:.3f}  scale {s.logit_scale:.1f}")

        result = run_training(cfg, resume=resume, on_step=on_step, on_load=load_update)
    for error in result.skipped:
        err.print(f"[yellow]skipped[/] {error.source}: {error.reason}", highlight=False)
    summary = {"out": str(result.out), "steps": result.steps, "final_loss": result.final_loss,
               "images": result.images, "skipped": len(result.skipped)}
    if as_json:
        emit_json(summary)
    else:
        err.print(f"trained {result.steps} steps on {result.images} images (final loss {result.final_loss:.4f}) → {result.out}")
    if result.skipped:
        raise typer.Exit(1)


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()
