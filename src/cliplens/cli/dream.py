"""``cliplens dream``: an image a model judges to fit a prompt (CLIP+FFT): what it "thinks" a caption looks like."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from PIL import Image

import cliplens
from cliplens.cli.common import (DeviceOpt, JsonOpt, LabelsFileOpt, ModelOpt, OverwriteOpt, add, at_least,
                                 check_output, emit_json, err, load_model_with_status, out, progress)
from cliplens.errors import UsageError

TORCH_PRECISIONS = ("fp32", "bf16", "fp16")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the cliplens app."""
    add(app, "dream", dream)


def _check_format(path: Path, parameter: str, suffixes=None) -> None:
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise UsageError(f"give a {' or '.join(suffixes)} file name", value=cliplens.display_path(path),
                         parameter=parameter)
    if path.suffix and path.suffix.lower() not in Image.registered_extensions():
        raise UsageError(f"{path.suffix!r} is not an image format Pillow writes (use .png)",
                         value=cliplens.display_path(path), parameter=parameter)


def dream(prompt: str = typer.Argument(..., help="What the image should show."),
          out_file: Path = typer.Option(..., "--out", "-o", metavar="FILE",
                                        help="Write the image here (PNG, or any format Pillow writes)."),
          negative: List[str] = typer.Option(None, "--negative", metavar="TEXT",
                                             help="What it should not look like (repeatable)."),
          against: List[str] = typer.Option(None, "--against", metavar="TEXT",
                                            help="What it must be told apart from, written as the prompt is "
                                                 "(repeatable; e.g. the other labels of a set): the prompt's "
                                                 "probability among them is raised, not only its similarity."),
          against_file: Optional[Path] = typer.Option(None, "--against-file", metavar="FILE",
                                                      help="--against texts from a file, one per line (# comments)."),
          steps: Optional[int] = typer.Option(None, "--steps", metavar="N", callback=at_least(1),
                                              help="Optimisation steps (default 400)."),
          size: Optional[str] = typer.Option(None, "--size", metavar="WxH",
                                             help="Width x height in pixels (default: 256x256, or the model's input "
                                                  "when larger; with --init, the photo's, longer side at most 512)."),
          guidance: str = typer.Option(cliplens.DEFAULT_DREAM_GUIDANCE, "--guidance", metavar="RECIPE",
                                       help="object (one object of one clear colour on a plain ground), robust "
                                            "(an object on a plain ground, in any colours) or plain (CLIP+FFT as "
                                            "it was: what the model alone rewards)."),
          seed: int = typer.Option(0, "--seed", metavar="N", help="Same seed, same device: the same image."),
          init: Optional[Path] = typer.Option(None, "--init", metavar="FILE",
                                              help="Start from this photo and edit it toward the prompt."),
          init_weight: Optional[float] = typer.Option(None, "--init-weight", metavar="W", callback=at_least(0),
                                                      help="How strongly --init keeps the image close to the photo "
                                                           "(default 10)."),
          param: str = typer.Option("fft", "--param", metavar="NAME",
                                    help="fft (Fourier, decorrelated colours) or pixel."),
          lr: Optional[float] = typer.Option(None, "--lr", metavar="RATE",
                                             help="Adam's learning rate (default 0.05 fft, 0.1 pixel)."),
          cutouts: Optional[int] = typer.Option(None, "--cutouts", metavar="N", callback=at_least(1),
                                                help="Random views of the image per step (default: the "
                                                     "recipe's, 16 object and robust, 8 plain)."),
          tv_weight: Optional[float] = typer.Option(None, "--tv-weight", metavar="W", callback=at_least(0),
                                                    help="Smoothness (total variation) weight (default: the "
                                                         "recipe's, 0.5 object and robust, 0.05 plain)."),
          frames: Optional[Path] = typer.Option(None, "--frames", metavar="DIR",
                                                help="Write intermediate images into this folder."),
          gif: Optional[Path] = typer.Option(None, "--gif", metavar="FILE", help="Write the run as an animated GIF."),
          frame_every: Optional[int] = typer.Option(None, "--frame-every", metavar="N", callback=at_least(1),
                                                    help="Steps between frames (default: about 40 frames in all)."),
          label: List[str] = typer.Option(None, "--label", "-l", metavar="TEXT",
                                          help="Classify the result (and the --init photo) among these labels "
                                               "(repeatable)."),
          labels_file: Optional[Path] = LabelsFileOpt,
          overwrite: bool = OverwriteOpt, model: Optional[str] = ModelOpt, device: Optional[str] = DeviceOpt,
          backend: str = typer.Option("torch", "--backend", metavar="NAME",
                                      help="torch (or auto): dream needs gradients, which ONNX Runtime does not give."),
          precision: str = typer.Option("fp32", "--precision", metavar="NAME",
                                        help="fp32, bf16 or fp16 (GPU); dream runs in torch."),
          as_json: bool = JsonOpt) -> None:
    """Generate an image the model judges to show PROMPT (CLIP-guided, from noise or from --init)."""
    given = {"steps": steps, "init_weight": init_weight, "tv_weight": tv_weight}
    options = {k: v for k, v in given.items() if v is not None}  # the library's defaults for the rest
    # everything that can be wrong is said before the model loads and the run starts
    rivals = list(against or []) + (cliplens.read_labels_file(against_file, "against_file")
                                    if against_file is not None else [])
    cliplens.check_dream_options(prompt, negative or (), param=param, lr=lr, cutouts=cutouts, size=size,
                                 against=rivals, frame_every=frame_every, guidance=guidance, **options)
    if backend not in ("torch", "auto"):
        raise UsageError("dream follows gradients through the model, which needs torch",
                         value=str(backend), parameter="backend")
    if precision not in TORCH_PRECISIONS:
        raise UsageError(f"dream follows gradients in torch, which runs "
                         f"{', '.join(TORCH_PRECISIONS)}", value=str(precision), parameter="precision")
    _check_format(out_file, "out_file")
    check_output(out_file, "out_file", overwrite=overwrite)
    if gif is not None:
        _check_format(gif, "gif", (".gif",))
        check_output(gif, "gif", overwrite=overwrite)
    check_output(frames, "frames", overwrite=overwrite, folder=True)
    wanted = list(label or []) + (cliplens.read_labels_file(labels_file) if labels_file is not None else [])
    start = cliplens.load_image(init) if init is not None else None  # an unreadable photo fails here, not later

    encoder = load_model_with_status(model, device, "torch", precision)
    collected = []
    if frames is not None:
        frames.mkdir(exist_ok=True)

    def on_frame(step: int, image) -> None:
        if frames is not None:
            with cliplens.atomic_write(frames / f"{step:05d}.png", "wb") as fh:  # never half a frame in the folder
                image.save(fh, format="PNG")
        if gif is not None:
            collected.append(image)

    with progress("dreaming", "steps") as bar:
        task = bar.add_task("dreaming", total=None, rate="")

        def on_step(done: int, count: int, similarity: float) -> None:
            speed = bar.tasks[task].speed
            rate = f"similarity {similarity:.3f}" + (f"  {speed:.1f} steps/s" if speed else "")
            bar.update(task, completed=done, total=count, rate=rate)

        result = cliplens.dream(prompt, encoder, negative=negative or (), against=rivals, size=size, seed=seed,
                                init=init, param=param, lr=lr, cutouts=cutouts, on_step=on_step,
                                frame_every=frame_every, guidance=guidance,
                                on_frame=on_frame if (frames is not None or gif is not None) else None, **options)
    result.save(out_file)
    if gif is not None:
        cliplens.save_gif(collected, gif)
    summary = {"out": cliplens.display_path(out_file), **result.to_dict()}
    summary["frames"] = cliplens.display_path(frames) if frames is not None else None
    summary["gif"] = cliplens.display_path(gif) if gif is not None else None
    classification = start_classification = None
    if wanted:
        classifier = cliplens.Classifier(wanted, encoder)
        classification = classifier.classify(result.image)
        summary["classification"] = classification.to_dict() | {"image": cliplens.display_path(out_file)}
        if start is not None:
            start_classification = classifier.classify(start)
            summary["start_classification"] = start_classification.to_dict() | {"image": cliplens.display_path(init)}
    if as_json:
        emit_json(summary)
        return
    out.print(f"{cliplens.display_path(out_file)}: similarity to {result.prompt!r} {result.start_similarity:.3f} → "
              f"{result.similarity:.3f} "
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
        err.print(f"{len(list(frames.glob('*.png')))} frames → {cliplens.display_path(frames)}", highlight=False)
    if gif is not None:
        err.print(f"{len(collected)} frames → {cliplens.display_path(gif)}", highlight=False)
