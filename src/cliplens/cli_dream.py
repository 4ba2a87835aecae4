"""``cliplens dream``: an image a model judges to fit a prompt (CLIP+FFT): what it "thinks" a caption looks like."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cliplens.cli_common import DeviceOpt, JsonOpt, ModelOpt, command, emit_json, err, load_model_with_status, out, \
    progress
from cliplens.errors import UsageError

TORCH_PRECISIONS = ("fp32", "bf16", "fp16")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the cliplens app."""
    app.command("dream")(command(dream))


def _check_out(path: Path, what: str) -> None:
    from PIL import Image

    if path.suffix and path.suffix.lower() not in Image.registered_extensions():
        raise UsageError(f"{what} {path}: {path.suffix!r} is not an image format Pillow writes (use .png)")
    if path.exists() and path.is_dir():
        raise UsageError(f"{what} {path}: is a folder; give a file name")


def _labels(items: List[str]) -> list[str]:
    return [label.strip() for item in items for label in item.split(",") if label.strip()]


def dream(prompt: str = typer.Argument(..., help="What the image should show."),
          out_file: Path = typer.Option(..., "--out", "-o", help="Write the image here (PNG, or any format Pillow "
                                                                  "writes)."),
          negative: List[str] = typer.Option(None, "--negative", help="What it should not look like (repeatable)."),
          steps: int = typer.Option(None, "--steps", min=1, help="Optimisation steps (default 400)."),
          size: Optional[str] = typer.Option(None, "--size",
                                             help="WIDTHxHEIGHT (default: the model's input size; with --init, the "
                                                  "photo's, longer side at most 512)."),
          seed: int = typer.Option(0, "--seed", help="Same seed, same device: the same image."),
          init: Optional[Path] = typer.Option(None, "--init", help="Start from this photo and edit it toward the "
                                                                   "prompt."),
          init_weight: float = typer.Option(None, "--init-weight", min=0.0,
                                            help="How strongly --init keeps the image close to the photo "
                                                 "(default 10)."),
          param: str = typer.Option("fft", "--param", help="fft (Fourier, decorrelated colours) or pixel."),
          lr: Optional[float] = typer.Option(None, "--lr", help="Adam's learning rate (default 0.05 fft, 0.1 pixel)."),
          cutouts: int = typer.Option(None, "--cutouts", min=1, help="Random views of the image per step (default 8)."),
          tv_weight: float = typer.Option(None, "--tv-weight", min=0.0,
                                          help="Smoothness (total variation) weight (default 0.05)."),
          frames: Optional[Path] = typer.Option(None, "--frames", help="Write intermediate images into this folder."),
          gif: Optional[Path] = typer.Option(None, "--gif", help="Write the run as an animated GIF."),
          frame_every: Optional[int] = typer.Option(None, "--frame-every", min=1,
                                                    help="Steps between frames (default: about 40 frames in all)."),
          labels: List[str] = typer.Option(None, "--labels", "-l",
                                           help="Classify the result (and the --init photo) among these labels "
                                                "(comma-separated or repeated)."),
          model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt,
          backend: str = typer.Option("torch", "--backend", help="torch (or auto): dream needs gradients, which ONNX "
                                                                  "Runtime does not give."),
          precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (GPU); dream runs in torch."),
          as_json: bool = JsonOpt) -> None:
    """Generate an image the model judges to show PROMPT (CLIP-guided, from noise or from --init)."""
    import cliplens
    from cliplens.dream import (DEFAULT_INIT_WEIGHT, DEFAULT_STEPS, DEFAULT_TV_WEIGHT, check_options, check_size,
                                save_gif)
    from cliplens.dream import dream as run

    steps = steps or DEFAULT_STEPS
    init_weight = DEFAULT_INIT_WEIGHT if init_weight is None else init_weight
    tv_weight = DEFAULT_TV_WEIGHT if tv_weight is None else tv_weight
    # everything that can be wrong is said before the model loads and the run starts
    check_options(prompt, negative or (), steps, param, lr, cutouts, tv_weight, init_weight, frame_every or 0)
    if backend not in ("torch", "auto"):
        raise UsageError(f"--backend {backend}: dream follows gradients through the model, which needs torch")
    if precision not in TORCH_PRECISIONS:
        raise UsageError(f"--precision {precision}: dream follows gradients in torch, which runs "
                         f"{', '.join(TORCH_PRECISIONS)}")
    _check_out(out_file, "--out")
    if gif is not None:
        if gif.suffix.lower() != ".gif":
            raise UsageError(f"--gif {gif}: give a .gif file name")
        _check_out(gif, "--gif")
    if frames is not None and frames.exists() and not frames.is_dir():
        raise UsageError(f"--frames {frames}: is a file; give a folder")
    wanted = _labels(labels or [])
    start = cliplens.load_image(init) if init is not None else None  # an unreadable photo fails here, not after loading
    if size is not None:
        check_size(size)
    every = frame_every or max(1, steps // 40)

    encoder = load_model_with_status(model, device, "torch", precision)
    collected = []
    if frames is not None:
        frames.mkdir(parents=True, exist_ok=True)

    def on_frame(step: int, image) -> None:
        if frames is not None:
            image.save(frames / f"{step:05d}.png")
        if gif is not None:
            collected.append(image)

    with progress("dreaming", "steps") as bar:
        task = bar.add_task("dreaming", total=steps, rate="")

        def on_step(done: int, total: int, similarity: float) -> None:
            speed = bar.tasks[task].speed
            rate = f"similarity {similarity:.3f}" + (f"  {speed:.1f} steps/s" if speed else "")
            bar.update(task, completed=done, total=total, rate=rate)

        result = run(prompt, encoder, negative=negative or (), steps=steps, size=size, seed=seed, init=init,
                     param=param, lr=lr, cutouts=cutouts, tv_weight=tv_weight, init_weight=init_weight,
                     on_step=on_step, frame_every=every if (frames is not None or gif is not None) else 0,
                     on_frame=on_frame if (frames is not None or gif is not None) else None)
    result.save(out_file)
    if gif is not None:
        save_gif(collected, gif)
    summary = {"out": str(out_file), **result.to_dict()}
    summary["frames"] = str(frames) if frames is not None else None
    summary["gif"] = str(gif) if gif is not None else None
    classification = start_classification = None
    if wanted:
        classifier = cliplens.Classifier(wanted, encoder)
        classification = classifier.classify(result.image)
        summary["classification"] = classification.to_dict()
        summary["classification"]["image"] = str(out_file)
        if start is not None:
            start_classification = classifier.classify(start)
            summary["start_classification"] = start_classification.to_dict()
            summary["start_classification"]["image"] = str(init)
    if as_json:
        emit_json(summary)
        return
    out.print(f"{out_file}: similarity to {result.prompt!r} {result.start_similarity:.3f} → {result.similarity:.3f} "
              f"({result.steps} steps, {result.seconds:.1f} s, {result.size[0]}×{result.size[1]}, seed {result.seed})",
              highlight=False)
    if classification is not None:
        def top(c) -> str:
            return ", ".join(f"{s.label} {s.probability:.1%}" for s in c.labels[:3])

        if start_classification is not None:
            out.print(f"  start: {top(start_classification)}", highlight=False)
        out.print(f"  {'result' if start_classification is not None else 'classified'}: {top(classification)}",
                  highlight=False)
    if frames is not None:
        err.print(f"frames every {every} steps → {frames}", highlight=False)
    if gif is not None:
        err.print(f"{len(collected)} frames → {gif}", highlight=False)
