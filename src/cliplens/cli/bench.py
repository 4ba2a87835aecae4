"""``cliplens bench``: commands that print speed, memory and parity figures (never timed tests)."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import typer

import cliplens
from cliplens.cli.common import (
    ModelOpt,
    above_up_to,
    add,
    at_least,
    check_output,
    emit_json,
    err,
    load_model_with_status,
    new_app,
    out,
    progress,
    rate_updater,
    shown,
)
from cliplens.errors import UsageError

bench_app = new_app("Benchmarks: speed against plain transformers, cold start, memory, parity, search, serve, dream.")

BenchModelOpt = typer.Option(None, "--model", "-m", metavar="MODEL",
                             help="Model to time (default: a ViT-B/32 with random weights; speed does not depend on "
                                  "them).")
BenchBackendOpt = typer.Option(None, "--backend", metavar="NAME", help="torch, onnx or auto (default auto).")
BenchPrecisionOpt = typer.Option(None, "--precision", metavar="NAME",
                                 help="fp32, bf16, fp16, int8 or auto (default auto).")
JsonOpt = typer.Option(False, "--json", help="Print the figures as one JSON object on stdout.")
ImagesOpt = typer.Option(None, "--images", metavar="DIR", help="Folder of images (default: generated ones).")
BENCH_LABELS = ("a dog", "a cat", "a car", "a tree", "a house", "a beach", "a mountain", "a person", "food", "a city street")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
    for name, fn in (("embed", bench_embed), ("classify", bench_classify), ("text", bench_text), ("coldstart", bench_coldstart),
                     ("memory", bench_memory), ("parity", bench_parity), ("open-set", bench_open_set), ("search", bench_search),
                     ("caption", bench_caption), ("dream", bench_dream), ("serve", bench_serve),
                     ("index", bench_index), ("video", bench_video), ("typographic", bench_typographic),
                     ("finetune", bench_finetune)):
        add(bench_app, name, fn)


def _machine() -> str:
    from cliplens.bench.machine import describe_cpu

    return f"{describe_cpu()}, {platform.system()}"


def _bench_model(model: str | None) -> tuple[str, Path, str]:
    """(name, folder, note) of the model to time; the default ViT-B/32 is made once, with a note saying so."""
    from cliplens.bench.data import BENCH_MODEL, vit_b32_dir

    if model is None:
        with err.status("making a ViT-B/32 with random weights for timing (once)"):
            folder = vit_b32_dir()
        return BENCH_MODEL, folder, "ViT-B/32 (openai/clip-vit-base-patch32's architecture) with random weights: speed does not depend on their values"
    return model, cliplens.resolve_model_dir(model, allow_download=False), ""


def _photos(images: Path | None, n: int) -> list[Path]:
    from cliplens.bench.data import PHOTO_SIZE, photo_folder, photo_paths

    if images is not None:
        paths = cliplens.expand_paths([images])
        if not paths:
            raise UsageError(f"--images {images}: no images found")
        return paths[:n] if n else paths
    paths = photo_paths(n)
    if not all(path.exists() for path in paths):
        with progress(f"generating {n} photo-sized JPEGs ({PHOTO_SIZE[0]}×{PHOTO_SIZE[1]}, once)") as bar:
            task = bar.add_task("generating", total=n, rate="")
            photo_folder(n, on_progress=rate_updater(bar, task, "img"))
    return paths


def _require_clip(folder: Path) -> None:
    import json

    kind = json.loads((folder / "config.json").read_text()).get("model_type")
    if kind != "clip":
        raise UsageError(f"{folder}: the reference loop uses CLIPModel and CLIPProcessor; give a CLIP checkpoint")


def _report_throughput(result, unit: str, detail: str, note: str, as_json: bool, extra: dict | None = None,
                       lines: tuple[str, ...] = ()) -> None:
    """Print a throughput comparison, or {model, UNIT, cliplens_UNIT_per_s, reference_UNIT_per_s, ratio, ...extra}."""
    from cliplens.bench.machine import cpu_features, describe_cpu

    if as_json:
        emit_json({"model": result.model, unit: result.items, "backend": result.backend, "precision": result.precision,
                   f"cliplens_{unit}_per_s": round(result.cliplens_per_s, 2),
                   f"reference_{unit}_per_s": round(result.reference_per_s, 2), "ratio": round(result.ratio, 2),
                   "cpu": describe_cpu(), "cpu_features": list(cpu_features()), **(extra or {})})
        return
    out.print(f"cliplens ({result.backend} {result.precision})  {result.cliplens_per_s:7.1f} {unit}/s\n"
              f"transformers loop (fp32)      {result.reference_per_s:7.1f} {unit}/s\n"
              f"ratio                         {result.ratio:7.2f}×  ({result.items} {unit}, {detail}, {_machine()})",
              highlight=False)
    for line in lines:
        out.print(line, highlight=False)
    if note:
        err.print(note, highlight=False)


def _timed_encoder(name: str, folder: Path, model: str | None, backend: str | None, precision: str | None,
                   purpose: str):
    """The encoder a throughput benchmark times, and the figures saying which runtime it is and why."""
    from cliplens.bench.choice import load_timed, timed_runtime
    from cliplens.bench.machine import recorded_verdict

    if backend or precision:  # the user named the runtime: time it, with its own verdict when one was measured
        encoder = load_model_with_status(str(folder), "cpu", backend, precision, purpose=purpose)
        verdict = recorded_verdict(folder, encoder.info.runtime)
        figures = {"runtime_choice": {"reason": "named on the command line"},
                   "recall_at_10_vs_fp32": round(verdict.recall_at_10, 4) if verdict else None,
                   "max_probability_delta_probe": round(verdict.max_probability_delta, 6) if verdict else None}
        return encoder, figures, ()
    status = err.status("choosing the runtime")
    with status:
        timed = timed_runtime(folder, name, purpose, random_weights=model is None, on_status=status.update)
    encoder = load_timed(folder, timed)
    figures = {"runtime_choice": timed.to_dict(), "recall_at_10_vs_fp32": round(timed.verdict.recall_at_10, 4)}
    where = "the trained demo model" if timed.verdicts_from == "demo" else name
    line = (f"runtime: {timed.runtime.name}, {timed.reason}; on {where} it keeps {timed.verdict.recall_at_10:.3f} "
            f"of each fp32 top 10 and moves probabilities by up to {timed.verdict.max_probability_delta:.4f}")
    return encoder, figures, (line,)


def _target_ratio(avx512: float, avx2: float) -> float:
    from cliplens.bench.machine import has_avx512

    return avx512 if has_avx512() else avx2


def bench_embed(images: Path | None = typer.Option(None, "--images", help="Folder of images (default: 200 generated 3000×2000 JPEGs)."),
                n: int = typer.Option(200, "-n", callback=at_least(1), help="How many images to use."),
                rounds: int = typer.Option(2, "--rounds", callback=at_least(1), help="Alternating rounds per path."),
                model: str | None = BenchModelOpt, backend: str | None = BenchBackendOpt,
                precision: str | None = BenchPrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Images/s from files to embeddings: cliplens against a plain transformers loop, same model and files.

    Times the runtime `auto` picks for indexing on this machine (the ranking contract); for the default
    random-weight ViT-B/32, the one it picks for a trained CLIP (verdicts from the demo model)."""
    from cliplens.bench.throughput import image_throughput

    name, folder, note = _bench_model(model)
    _require_clip(folder)
    paths = _photos(images, n)
    encoder, figures, lines = _timed_encoder(name, folder, model, backend, precision, "rankings")
    with err.status(f"timing {len(paths)} images, {rounds} alternating rounds per path"):
        result = image_throughput(paths, name, folder, rounds=rounds, encoder=encoder)
    target = _target_ratio(4.0, 3.0)
    _report_throughput(result, "images", f"{rounds} rounds", note, as_json, {**figures, "target_ratio": target},
                       (*lines, f"target on this CPU: ≥ {target:g}× (AVX-512: 4×, AVX2 only: 3×)"))


def bench_classify(images: Path | None = typer.Option(None, "--images", help="Folder of photos (default: 200 generated 3000×2000 JPEGs)."),
                   n: int = typer.Option(200, "-n", callback=at_least(1), help="How many images to use."),
                   labels: list[str] | None = typer.Option(None, "--label", metavar="LABEL",
                                                              help="A label (repeat; default: 10 everyday ones)."),
                   rounds: int = typer.Option(2, "--rounds", callback=at_least(1), help="Alternating rounds per path."),
                   model: str | None = BenchModelOpt, backend: str | None = BenchBackendOpt,
                   precision: str | None = BenchPrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Zero-shot classification of photos against 10 labels: cliplens against the CLIPModel loop a transformers
    user writes, with the largest probability difference between the two (the contract: ≤ 0.01)."""
    from cliplens.bench.throughput import classify_throughput

    name, folder, note = _bench_model(model)
    _require_clip(folder)
    paths = _photos(images, n)
    chosen = list(labels) if labels else list(BENCH_LABELS)
    encoder, figures, lines = _timed_encoder(name, folder, model, backend, precision, "probabilities")
    with err.status(f"classifying {len(paths)} images, {rounds} alternating rounds per path"):
        result = classify_throughput(paths, chosen, name, folder, rounds=rounds, encoder=encoder)
    target = _target_ratio(3.0, 2.5)
    figures = {**figures, "labels": result.labels, "max_probability_delta": round(result.max_probability_delta, 6),
               "target_ratio": target}
    _report_throughput(result, "images", f"{rounds} rounds, {result.labels} labels", note, as_json, figures,
                       (*lines, f"largest probability difference from the transformers loop: "
                                f"{result.max_probability_delta:.2e} (contract ≤ 0.01)",
                        f"target on this CPU: ≥ {target:g}× (AVX-512: 3×, AVX2 only: 2.5×)"))


def bench_text(n: int = typer.Option(1000, "-n", callback=at_least(1), help="How many prompts (ImageNet classes, 'a photo of a {}.')."),
               rounds: int = typer.Option(2, "--rounds", callback=at_least(1), help="Alternating rounds per path."),
               model: str | None = BenchModelOpt, backend: str | None = BenchBackendOpt,
               precision: str | None = BenchPrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Texts/s: cliplens against a plain transformers loop (CLIPProcessor + get_text_features, batch 32)."""
    from cliplens.bench.throughput import text_throughput
    name, folder, note = _bench_model(model)
    _require_clip(folder)
    classes = cliplens.imagenet_classes()
    texts = [f"a photo of a {classes[i % len(classes)]}." for i in range(n)]
    load_model_with_status(str(folder), None, backend, precision)
    with err.status(f"timing {len(texts)} texts, {rounds} alternating rounds per path"):
        result = text_throughput(texts, name, folder, rounds=rounds, backend=backend, precision=precision)
    _report_throughput(result, "texts", f"{rounds} rounds", note, as_json)


def bench_coldstart(runs: int = typer.Option(5, "--runs", callback=at_least(1),
                                           help="Fresh processes timed after the first (untimed) one."),
                    model: str | None = BenchModelOpt, as_json: bool = JsonOpt) -> None:
    """Wall time of `cliplens classify PHOTO dog cat car tree house` as a fresh process, export cached."""
    from cliplens.bench.process import cold_start

    name, folder, note = _bench_model(model)
    image = _photos(None, 1)[0]
    load_model_with_status(str(folder), None)  # the export is made (and cached) before anything is timed
    with err.status(f"running `cliplens classify` {runs + 1} times"):
        result = cold_start(image, ["dog", "cat", "car", "tree", "house"], str(folder), runs=runs, shown_model=name)
    figures = {"model": name, "command": result.command, "first_run_s": round(result.first_run_s, 3),
               "wall_s_median": round(result.wall_s_median, 3), "wall_s_min": round(result.wall_s_min, 3),
               "runs": result.runs, "target_s": 3.0}
    if as_json:
        emit_json(figures)
        return
    out.print(f"{result.command}\n"
              f"first run (reference vocabulary embedded and cached) {result.first_run_s:.2f} s\n"
              f"later runs: median {result.wall_s_median:.2f} s, best {result.wall_s_min:.2f} s "
              f"over {runs} fresh processes (target ≤ 3 s; {_machine()})", highlight=False)
    if note:
        err.print(note, highlight=False)


def bench_index(n: int = typer.Option(200, "-n", callback=at_least(1), help="How many photos to index."),
                rounds: int = typer.Option(4, "--rounds", callback=at_least(1), help="Alternating rounds per path."),
                model: str | None = BenchModelOpt, backend: str | None = BenchBackendOpt,
                precision: str | None = BenchPrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Images/s of `cliplens index` with and without reading each photo's metadata (EXIF dates, camera, GPS).

    The photos are the generated 3000×2000 JPEGs with a camera's EXIF block; each round indexes them into a
    fresh index both ways, alternating, and each way keeps its best round."""
    from cliplens.bench.library import index_metadata_benchmark, photos_with_exif

    name, folder, note = _bench_model(model)
    paths = _photos(None, n)
    encoder, figures, lines = _timed_encoder(name, folder, model, backend, precision, "rankings")
    status = err.status("preparing")
    with status:
        photos = photos_with_exif(paths)
        result = index_metadata_benchmark(photos, encoder, rounds=rounds, on_status=status.update)
    runtime = f"{encoder.info.backend} {encoder.info.precision}"
    _report_library(name, runtime, {**result.to_dict(), "target_ratio": 0.95}, as_json, lines, note,
                    f"indexing with metadata     {result.with_metadata_per_s:6.2f} images/s\n"
                    f"indexing without metadata  {result.without_metadata_per_s:6.2f} images/s\n"
                    f"ratio                      {result.ratio:6.3f}  (target ≥ 0.95; {result.images} photos, best "
                    f"of {rounds} rounds, {runtime}, {_machine()})")


def _report_library(model: str, runtime: str, figures: dict, as_json: bool, lines, note: str, text: str) -> None:
    """Print a photo-library benchmark: ``text`` and the runtime lines, or its JSON with the model, runtime and CPU."""
    from cliplens.bench.machine import cpu_features, describe_cpu

    if as_json:
        emit_json({"model": model, "runtime": runtime, **figures, "cpu": describe_cpu(),
                   "cpu_features": list(cpu_features())})
        return
    out.print(text, highlight=False)
    for line in lines:
        out.print(line, highlight=False)
    if note:
        err.print(note, highlight=False)


def bench_video(seconds: int = typer.Option(60, "--seconds", callback=at_least(1), help="Length of the generated 1080p film."),
                model: str | None = BenchModelOpt, backend: str | None = BenchBackendOpt,
                precision: str | None = BenchPrecisionOpt, as_json: bool = JsonOpt) -> None:
    """How many times real time a 1080p30 H.264 film indexes (frames sampled about once a second and at each
    cut, one vector per scene); the film is generated once."""
    from cliplens.bench.library import bench_video as film, video_benchmark

    name, folder, note = _bench_model(model)
    encoder, figures, lines = _timed_encoder(name, folder, model, backend, precision, "rankings")
    status = err.status("preparing")
    with status:
        path = film(seconds, on_status=status.update)
        result = video_benchmark(path, encoder, on_status=status.update)
    runtime = f"{encoder.info.backend} {encoder.info.precision}"
    _report_library(name, runtime, {**result.to_dict(), "target_realtime": 5.0}, as_json, lines, note,
                    f"film               {result.seconds_of_video:.0f} s of {result.width}×{result.height} at "
                    f"{result.fps} fps, H.264 {result.bitrate_mbps:.1f} Mbit/s: {result.samples} frames sampled, "
                    f"{result.scenes} scenes\n"
                    f"decode and sample {result.decode_s:6.1f} s  {result.decode_realtime:5.1f}× real time\n"
                    f"index (with model) {result.index_s:5.1f} s  {result.index_realtime:5.1f}× real time  "
                    f"(target ≥ 5×; {runtime}, {_machine()})")


def bench_typographic(images: int = typer.Option(300, "-n", callback=at_least(1), help="Images per set (attacked, clean)."),
                      seed: int = typer.Option(0, "--seed", help="Seed of the generated scenes."),
                      model: str = typer.Option("demo", "--model", "-m", help="Model to attack (default: the demo model)."),
                      backend: str | None = BenchBackendOpt, precision: str | None = BenchPrecisionOpt,
                      as_json: bool = JsonOpt) -> None:
    """Typographic attacks on the demo domain and the --ignore-text defence: top-1 on clean and attacked images,
    with and without covering the text first, and how often the written word wins."""
    from cliplens.bench.machine import describe_cpu
    from cliplens.bench.typographic import typographic_benchmark

    encoder = load_model_with_status(model, None, backend, precision)
    with progress("classifying", unit="images") as bar:
        task = bar.add_task("classifying", total=4 * images + 8, rate="")
        result = typographic_benchmark(encoder, images=images, seed=seed,
                                       on_progress=rate_updater(bar, task, "img"))
    figures = {"model": encoder.name, "runtime": f"{encoder.info.backend} {encoder.info.precision}",
               **result.to_dict(), "cpu": describe_cpu()}
    if as_json:
        emit_json(figures)
        return
    out.print(f"top-1 among the {len(cliplens.DEMO_LABELS)} demo labels, {images} images per set "
              f"({figures['runtime']}, {_machine()}):\n"
              f"                    as they are   --ignore-text\n"
              f"clean images        {result.clean_top1:11.1%}   {result.clean_ignore_text_top1:11.1%}\n"
              f"attacked images     {result.attacked_top1:11.1%}   {result.attacked_ignore_text_top1:11.1%}\n"
              f"the word wins       {result.word_wins:11.1%}   {result.word_wins_ignore_text:11.1%}   "
              f"(of the {result.contradicting} signs that contradict the picture)\n"
              f"text covered in {result.attacked_with_text_found:.1%} of attacked images, "
              f"{result.clean_with_text_found:.1%} of clean ones; +{result.ocr_ms_per_image:.0f} ms per image",
              highlight=False)


def bench_finetune(steps: int = typer.Option(300, "--steps", callback=at_least(1), help="Steps of each fine-tune."),
                   train_images: int = typer.Option(3000, "--train-images", callback=at_least(2),
                                                    help="Generated pairs of the new shapes to fine-tune on."),
                   test_images: int = typer.Option(600, "--test-images", callback=at_least(1),
                                                   help="Generated test images per set (new shapes, demo shapes)."),
                   work: Path | None = typer.Option(None, "--work", metavar="DIR",
                                                       help="Folder for the data and checkpoints (default: the "
                                                            "bench cache)."),
                   as_json: bool = JsonOpt) -> None:
    """Fine-tuning without forgetting: the demo model learns six new shapes plainly, with --wise auto, with
    --freeze image and with --lora 8; new-domain and keep-set top-1 on test sets, trained parameters, sizes."""
    from cliplens.bench.data import bench_root
    from cliplens.bench.finetune import FinetuneSettings, finetune_benchmark
    from cliplens.bench.machine import describe_cpu

    settings = FinetuneSettings(steps=steps, train_images=train_images, test_images=test_images)
    folder = work or bench_root() / "finetune"
    with err.status("fine-tuning") as status:
        figures = finetune_benchmark(folder, settings, on_status=lambda message: status.update(shown(message)))
    figures["cpu"] = describe_cpu()
    if as_json:
        emit_json(figures)
        return
    original = figures["original"]
    out.print(f"the demo model fine-tuned on six new shapes, {steps} steps ({_machine()}); zero-shot top-1 on "
              f"{test_images} test images per set:\n"
              f"{'':18}{'new shapes':>11}{'demo shapes':>13}{'trained':>12}{'checkpoint':>12}\n"
              f"{'original':18}{original['new']:11.1%}{original['keep']:13.1%}", highlight=False)
    for name, row in figures["variants"].items():
        label = f"{name} (α {row['alpha']:g})" if "alpha" in row else name
        out.print(f"{label:18}{row['new']:11.1%}{row['keep']:13.1%}{row['trained_parameters']:12,}"
                  f"{row['checkpoint_bytes'] / 2**20:10.2f} MB", highlight=False)
    targets = figures["targets"]
    share = targets["wise_share_of_plain_gain"]
    out.print(f"wise auto keeps the demo shapes within 2 points: {targets['wise_keep_within_2_points']}; reaches "
              f"{share:.0%} of plain fine-tuning's gain (target 80%); LoRA checkpoint is "
              f"{targets['lora_checkpoint_share']:.1%} of the full one (target ≤ 10%)" if share is not None else
              "plain fine-tuning gained nothing on the new shapes", highlight=False)


def bench_memory(count: int = typer.Option(10_000, "--images", callback=at_least(1), help="How many images to index."),
                 model: str | None = BenchModelOpt, as_json: bool = JsonOpt) -> None:
    """Peak resident memory of `cliplens index` over many photo-sized JPEGs into a new index, in a process of its own."""
    from cliplens.bench.data import bench_root, many_files
    from cliplens.bench.process import index_memory

    name, folder, note = _bench_model(model)
    photos = _photos(None, min(count, 200))
    with err.status(f"writing {count} distinct copies of {len(photos)} generated photos"):
        images = many_files(photos[0].parent, count, f"many-{count}")
    load_model_with_status(str(folder), None)
    try:
        with err.status(f"indexing {count} images in a separate process"):
            result = index_memory(images, count, str(folder), bench_root() / "memory-index", shown_model=name)
    finally:  # the copies take about 1.7 MB each: do not leave them in the cache
        shutil.rmtree(images, ignore_errors=True)
        shutil.rmtree(bench_root() / "memory-index", ignore_errors=True)
    figures = {"model": name, "images": count, "peak_rss_mb": round(result.peak_rss_mb, 1),
               "seconds": round(result.seconds, 1), "images_per_s": round(result.images_per_s, 2),
               "target_mb": 2048, "command": result.command}
    if as_json:
        emit_json(figures)
        return
    out.print(f"{result.command}\npeak RSS {result.peak_rss_mb:.0f} MB over {count} images "
              f"({result.images_per_s:.1f} images/s; target ≤ 2048 MB; {_machine()})", highlight=False)
    if note:
        err.print(note, highlight=False)


def bench_parity(model: str | None = ModelOpt,
                 images: Path | None = typer.Option(None, "--images", help="Folder of held-out images (default: generated scenes)."),
                 labels_file: Path | None = typer.Option(None, "--labels-file", metavar="FILE", help="Labels for the probabilities (default: demo labels, or ImageNet classes for --images)."),
                 n: int = typer.Option(500, "-n", callback=at_least(1), help="How many images."),
                 as_json: bool = JsonOpt) -> None:
    """Every runtime on this machine against torch fp32: probabilities, top-1, recall@10 and speed.

    The verdicts are kept per model and machine: `--backend auto` then picks, for each kind of answer,
    the fastest runtime that meets its contract.
    """
    from cliplens.bench.parity import check_parity
    from cliplens.bench.machine import describe_cpu
    from cliplens.bench.machine import contracts as parity_contracts

    paths = None
    if images is not None:
        paths = cliplens.expand_paths([images])[:n]
        if not paths:
            raise UsageError("no images found", value=str(images), parameter="images")
    labels = cliplens.read_labels_file(labels_file) if labels_file else None
    status = err.status("checking parity")
    with status:
        verdicts = check_parity(model, images=paths, labels=labels, n=n, on_status=status.update)
    name = model or cliplens.DEFAULT_MODEL
    contracts = parity_contracts()
    faithful = all(v.probabilities and v.rankings for v in verdicts if v.runtime.endswith("fp32"))
    if as_json:
        emit_json({"model": name, "cpu": describe_cpu(), "images": verdicts[0].images, "labels": verdicts[0].labels,
                   "contracts": contracts, "fp32_runtimes_match": faithful,
                   "results": [v.to_dict() for v in verdicts]})
    else:
        from rich.table import Table

        table = Table("runtime", "max Δ probability", "top-1 agreement", "recall@10", "images/s (model)",
                      "probabilities", "rankings")
        for v in verdicts:
            table.add_row(v.runtime, f"{v.max_probability_delta:.2e}", f"{v.top1_agreement:.3f}",
                          f"{v.recall_at_10:.3f}", f"{v.images_per_s:.1f}" if v.images_per_s else "-",
                          "meets" if v.probabilities else "NO", "meets" if v.rankings else "NO")
        out.print(table)
        bars = contracts["probabilities"]
        err.print(f"{name}: {verdicts[0].images} images, {verdicts[0].labels} labels, against torch fp32 on "
                  f"{describe_cpu()}. Probabilities: every one within {bars['max_probability_delta']} (fp32 runtimes: "
                  f"{bars['fp32_max_probability_delta']}) and the same top label on ≥ {bars['top1_agreement']:.1%} of "
                  f"images; rankings: recall@10 ≥ {contracts['rankings']['recall_at_10']}.", highlight=False)
    if not faithful:  # an fp32 runtime that does not reproduce fp32 is a bug, not a trade-off
        raise typer.Exit(1)


def bench_open_set(model: str = typer.Option("demo", "--model", "-m", help="Model to measure (default: the demo model, "
                                                                      "whose calibration holds the open-set evidence)."),
                   inside: int = typer.Option(600, "--inside", callback=at_least(10), help="In-distribution scenes."),
                   per_kind: int = typer.Option(100, "--per-kind", callback=at_least(10),
                                                help="Out-of-distribution images of each kind."),
                   seed: int = typer.Option(0, "--seed", help="Seed of the generated images."),
                   as_json: bool = JsonOpt) -> None:
    """How well "none of these" separates the labels' world from everything else: AUROC and FPR at 95% TPR
    (in-distribution scenes offered their own label against generated out-of-distribution images), and the
    rates flagged at the default threshold."""
    from cliplens.bench.open_set import open_set_benchmark

    status = err.status("measuring")
    with status:
        result = open_set_benchmark(model, inside=inside, per_kind=per_kind, seed=seed, on_status=status.update)
    figures = result.to_dict()
    if as_json:
        emit_json(figures)
        return
    out.print(f"AUROC {result.auroc:.4f}, FPR95 {result.fpr95:.3f} (in-distribution scenes offered their own label "
              f"against {sum(result.outside.values())} out-of-distribution images)\n"
              f"flagged at 0.5: {result.flagged_outside:.1%} of out-of-distribution images (target ≥ 80%), "
              f"{result.flagged_inside_right_label:.1%} of scenes offered their own label (≤ 5%), "
              f"{result.flagged_inside_wrong_labels:.1%} of scenes offered only wrong labels (≥ 95%)", highlight=False)
    for kind, rate in result.flagged_outside_by_kind.items():
        out.print(f"  {kind:<10} flagged {rate:.1%}", highlight=False)
    for name, figure in result.evidence.items():
        out.print(f"  evidence {name}: AUROC {figure['auroc']:.4f}, FPR95 {figure['fpr95']:.3f}", highlight=False)
    cost = result.classify_ms
    if cost:
        out.print(f"scoring one embedded image: {cost['with_open_set']:.2f} ms with the open-set evidence, "
                  f"{cost['label_side_only']:.2f} ms without (+{cost['added']:.2f} ms; {_machine()})", highlight=False)


def bench_search(vectors: int = typer.Option(1_000_000, "--vectors", callback=at_least(1), help="How many vectors to index."),
                 dim: int = typer.Option(512, "--dim", callback=at_least(2), help="Their dimension (ViT-B/32: 512)."),
                 queries: int = typer.Option(200, "--queries", callback=at_least(1), help="Single queries to time (not in the index)."),
                 memory_budget_mb: float | None = typer.Option(None, "--memory-budget-mb", callback=at_least(1),
                                                                  help="Memory the index may use (MB = 2^20 bytes; default: no limit)."),
                 exact_below: int = typer.Option(100_000, "--exact-below", callback=at_least(0),
                                                 help="Exact search below this many vectors, as cliplens does."),
                 seed: int = typer.Option(0, "--seed", help="Seed of the synthetic vectors."),
                 filter_fraction: float | None = typer.Option(None, "--filter-fraction", metavar="F",
                                                              callback=above_up_to(0, 1),
                                                              help="Also time searches restricted to this share of "
                                                                   "the collection (a filter), e.g. 0.01."),
                 as_json: bool = JsonOpt) -> None:
    """Photo search: single queries against the vector index cliplens chooses, and against numpy brute force.

    Synthetic clustered vectors (normalised, CLIP-like); queries are held out from the index.
    """
    from cliplens.bench.search import BRUTEFORCE_QUERIES, search_benchmark

    status = err.status("preparing")
    with status:
        result = search_benchmark(vectors, dim, queries=queries, memory_budget_mb=memory_budget_mb,
                                  exact_below=exact_below, seed=seed, filter_fraction=filter_fraction,
                                  on_status=status.update)
    filtered = result.filtered
    params = ", ".join(f"{k} {v:g}" for k, v in result.params.items()) or "exact search"
    built = (f"{result.index} ({params}; recall@10 {result.tuned_recall:.3f} when tuned) built in "
             f"{result.build_s:.0f} s; {result.queries} held-out single queries; brute force timed on "
             f"{min(result.queries, BRUTEFORCE_QUERIES)}")
    if as_json:
        emit_json({"vectors": result.vectors, "dim": result.dim, "index": result.index,
                   "p50_ms": round(result.p50_ms, 3), "p99_ms": round(result.p99_ms, 3),
                   "recall_at_10": round(result.recall_at_10, 4), "memory_mb": round(result.memory_mb, 1),
                   "qps": round(result.qps, 1), "bruteforce_qps": round(result.bruteforce_qps, 2),
                   "ratio": round(result.ratio, 2), "cpu": _machine(),
                   **({"filtered": {k: round(v, 4) if isinstance(v, float) else v for k, v in filtered.items()}}
                      if filtered else {})})
        err.print(built, highlight=False)
        return
    out.print(f"{result.index}, {result.vectors:,} × {result.dim}\n"
              f"single queries     p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, {result.qps:,.0f} queries/s\n"
              f"recall@10          {result.recall_at_10:.3f} against exact search\n"
              f"memory             {result.memory_mb:,.0f} MB\n"
              f"numpy brute force  {result.bruteforce_qps:,.1f} queries/s; ratio {result.ratio:,.1f}×  ({_machine()})",
              highlight=False)
    if filtered:
        out.print(f"filtered to {filtered['fraction']:.1%}   p50 {filtered['p50_ms']:.2f} ms, p99 {filtered['p99_ms']:.2f} ms, "
                  f"recall@10 {filtered['recall_at_10']:.3f} within the {filtered['allowed']:,} allowed "
                  f"(targets: p50 ≤ 10 ms, recall ≥ 0.95)\n"
                  f"the date filter  p50 {filtered['sql_p50_ms']:.2f} ms in SQLite over {filtered['sql_rows']:,} rows",
                  highlight=False)
    err.print(built, highlight=False)


def bench_caption(labels: int = typer.Option(10_000, "--labels", callback=at_least(1), help="Labels in all banks (general banks plus generated ones)."),
                  runs: int = typer.Option(20, "--runs", callback=at_least(1), help="Warm calls timed per measurement."),
                  image: Path | None = typer.Option(None, "--image", help="Image to caption (default: a generated 3000×2000 JPEG)."),
                  model: str | None = BenchModelOpt, backend: str | None = BenchBackendOpt,
                  precision: str | None = BenchPrecisionOpt, as_json: bool = JsonOpt) -> None:
    """A warm caption call against encoding the image alone, with banks of many labels (target: ≤ +50 ms)."""
    from cliplens.bench.caption import time_caption

    name, folder, note = _bench_model(model)
    target = image if image is not None else _photos(None, 1)[0]
    if not target.is_file():
        raise UsageError(f"--image {target}: no such file")
    encoder = load_model_with_status(str(folder), None, backend, precision)
    with progress("embedding banks (once; cached)", unit="texts") as bar:
        tasks: dict[str, object] = {}

        def on_progress(bank: str, done: int, total: int) -> None:
            if bank not in tasks:
                tasks[bank] = bar.add_task(f"bank {bank}", total=total, rate="")
            bar.update(tasks[bank], completed=done, total=total)

        timing = time_caption(encoder, target, labels=labels, runs=runs, on_progress=on_progress)
    figures = {"model": name, "backend": encoder.info.backend, "precision": encoder.info.precision,
               "labels": timing.labels, "banks": timing.banks, "runs": timing.runs, "texts_encoded": timing.texts_encoded,
               "encode_ms": round(timing.encode_ms, 2), "caption_ms": round(timing.caption_ms, 2),
               "overhead_ms": round(timing.overhead_ms, 2), "scoring_ms": round(timing.scoring_ms, 2)}
    if as_json:
        emit_json(figures)
    else:
        out.print(f"encode image                {timing.encode_ms:8.1f} ms\n"
                  f"caption (encode + banks)    {timing.caption_ms:8.1f} ms\n"
                  f"overhead                    {timing.overhead_ms:8.1f} ms  (target ≤ 50)\n"
                  f"scoring an embedded image   {timing.scoring_ms:8.1f} ms\n"
                  f"({timing.labels} labels in {timing.banks} banks, {timing.texts_encoded} texts encoded to build, "
                  f"median of {timing.runs} warm calls, "
                  f"{encoder.info.backend} {encoder.info.precision}, {_machine()})", highlight=False)
    if note:
        err.print(note, highlight=False)


#: Models that know the demo vocabulary (the 30 colour × shape labels).
DEMO_MODELS = ("demo", "demo-robust")


def bench_dream(labels: list[str] = typer.Argument(None, help="Labels to dream (default: the 30 demo colour × shape labels)."),
                steps: int | None = typer.Option(None, "--steps", callback=at_least(1), help="Steps per image (default: dream's, 400)."),
                seed: int = typer.Option(0, "--seed", help="Seed of each dream."),
                template: str | None = typer.Option(None, "--template", help="Prompt made from each label (default: 'a {}', 'an {}')."),
                size: str | None = typer.Option(None, "--size", metavar="WxH", help="Image size (default: dream's, 256x256)."),
                guidance: str = typer.Option(cliplens.DEFAULT_DREAM_GUIDANCE, "--guidance", metavar="RECIPE",
                                             help="object, robust or plain (see dream)."),
                contrast: bool = typer.Option(True, "--contrast/--no-contrast",
                                              help="Dream each prompt against the other labels' prompts (dream "
                                                   "--against), or for its own similarity alone."),
                sheet: Path | None = typer.Option(None, "--sheet", metavar="FILE",
                                                  help="Write a contact sheet of the images (PNG) with both verdicts."),
                model: str = typer.Option("demo-robust", "--model", "-m",
                                          help="Model to dream with (default: the demo model's robust sibling)."),
                referee: str | None = typer.Option(None, "--referee", metavar="MODEL",
                                                   help="A second model that classifies each image too (default: demo "
                                                        "when dreaming with demo-robust)."),
                device: str | None = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA if present)."),
                as_json: bool = JsonOpt) -> None:
    """Seconds per `cliplens dream` image from noise, judged by the model that dreamed it (is the prompt's label
    its top label among all the labels, and how surely), by a second model (--referee) and by pixel statistics
    that use no model (does the named colour dominate and form one object, of the named shape)."""
    from cliplens.bench.dream import bench_dream as run
    from cliplens.bench.dream import contact_sheet
    from cliplens.bench.pixel_judge import judge_rendered

    vocabulary = list(cliplens.DEMO_LABELS)
    chosen = list(labels) if labels else vocabulary
    demo_vocabulary = model in DEMO_MODELS
    unknown = [label for label in chosen if label not in vocabulary]
    if unknown and demo_vocabulary:
        raise UsageError(f"{unknown[0]!r} is not a demo label (e.g. 'red circle')")
    cliplens.check_dream_options("a prompt", size=size, guidance=guidance)
    if sheet is not None:
        check_output(sheet, "sheet", overwrite=True)
    if referee is None and model == "demo-robust":
        referee = "demo"
    encoder = load_model_with_status(model, device, "torch", "fp32")
    second = load_model_with_status(referee, device, "torch", "fp32") if referee else None
    images = []
    with progress("dreaming", unit="images") as bar:
        task = bar.add_task("dreaming", total=len(chosen), rate="")
        result = run(encoder, vocabulary if demo_vocabulary else chosen, prompts=chosen, template=template,
                     steps=steps, seed=seed, on_progress=rate_updater(bar, task, "img"), size=size, guidance=guidance,
                     contrast=contrast,
                     on_image=lambda label, image: images.append((label, image)), referee=second)
    if sheet is not None:
        contact_sheet(images, result.runs).save(sheet)
    figures = {"model": encoder.name, "device": encoder.info.device, "machine": _machine(), **result.to_dict(),
               "judge_on_plain_drawings": judge_rendered(150, seed=1)}
    if as_json:
        emit_json(figures)
        return
    for r in result.runs:
        verdict = r.pixels
        pixels = (f"  pixels: {verdict['colour_share']:5.1%} {r.label.split()[0]}, "
                  f"{'one object' if verdict['one_object'] else 'no single object'}, looks {verdict['seen_shape'] or '-'}"
                  if verdict else "")
        second_view = f"  {result.referee}: top {r.referee_top}" if result.referee else ""
        out.print(f"{r.prompt:18s} {r.seconds:5.1f} s  model: P {r.probability:.2f}, top {r.top}{second_view}{pixels}",
                  highlight=False)
    summary = result.to_dict()
    judged = summary["pixels"]
    out.print(f"model: the prompt's label is its top label for {result.ranked_first}/{len(result.runs)} images "
              f"(P ≥ {result.threshold} for {result.passed}); median P {summary['median_probability']:.3f}",
              highlight=False)
    if result.referee:
        out.print(f"referee {result.referee}: the prompt's label is its top label for {result.referee_first}/"
                  f"{len(result.runs)} images", highlight=False)
    if judged:
        drawings = figures["judge_on_plain_drawings"]
        out.print(f"pixels: the named colour dominates and forms one object in {judged['recognisable']}/"
                  f"{judged['judged']}; the object has the named shape in {judged['right_shape']}/{judged['judged']} "
                  f"(the same judge on plain drawings: {drawings['recognisable']:.0%} and {drawings['right_shape']:.0%})",
                  highlight=False)
    out.print(f"median {summary['median_seconds']:.1f} s per {result.size[0]}×{result.size[1]} image, max "
              f"{summary['max_seconds']:.1f} s ({result.runs[0].steps} steps, {result.guidance} guidance"
              f"{', against the other labels' if result.contrast else ''}, seed {seed}, "
              f"{_machine()})", highlight=False)
    if sheet is not None:
        err.print(f"contact sheet → {cliplens.display_path(sheet)}", highlight=False)


def bench_serve(requests: int = typer.Option(256, "--requests", "-n", callback=at_least(1), help="Classify requests per measurement."),
                concurrency: int = typer.Option(16, "--concurrency", callback=at_least(2), help="Concurrent clients."),
                load: bool = typer.Option(False, "--load", help="Also run the load test: 1000 mixed requests from 32 clients."),
                images: Path | None = typer.Option(None, "--images", help="Images to send (default: generated photo-sized JPEGs, or demo shapes with --model demo)."),
                model: str | None = BenchModelOpt, backend: str | None = BenchBackendOpt,
                precision: str | None = BenchPrecisionOpt, as_json: bool = JsonOpt) -> None:
    """Classify throughput of `cliplens serve` with concurrent clients (merged batches) against one at a time, and
    against classifying the same images offline with the same runtime (target: ≥ 0.8× offline)."""
    from cliplens.bench.serve import ServerProcess, classify_calls, mixed_calls, offline_classify, scrape_metric, send

    name, folder, note = _bench_model(model)
    payloads = _serve_payloads(images, name)
    args = ["--model", str(folder)] + (["--backend", backend] if backend else []) + \
           (["--precision", precision] if precision else [])
    calls = classify_calls(payloads, requests)
    figures: dict = {"model": name, "requests": requests, "concurrency": concurrency, "machine": _machine()}
    with err.status("starting cliplens serve (dynamic batching on)") as status:
        with ServerProcess(args) as server:
            send(server.url, calls[:concurrency], concurrency)  # warm: label embeddings, first batches
            status.update(f"{requests} classify requests one at a time")
            one = send(server.url, calls, 1)
            before = scrape_metric(server.url, "cliplens_encoder_batch_images_count")
            status.update(f"{requests} classify requests from {concurrency} clients")
            many = send(server.url, calls, concurrency)
            batches = scrape_metric(server.url, "cliplens_encoder_batch_images_count") - before
            if load:
                status.update("load test: 1000 mixed requests from 32 clients")
                figures["load"] = send(server.url, mixed_calls(payloads, 1000, search=False, seed=1), 32).to_dict()
        status.update(f"{requests} classify requests from {concurrency} clients, batching off (--max-batch 1)")
        with ServerProcess(args + ["--max-batch", "1"]) as server:
            send(server.url, calls[:concurrency], concurrency)
            unbatched = send(server.url, calls, concurrency)
        status.update(f"the same {requests} images classified offline, in this process")
        offline = offline_classify(str(folder), payloads, requests, backend=backend, precision=precision)
    figures |= {"sequential": one.to_dict(), "concurrent": many.to_dict(), "concurrent_unbatched": unbatched.to_dict(),
                "offline": offline.to_dict(),
                "mean_batch_images": round(requests / batches, 2) if batches else None,
                "speedup": round(many.throughput / one.throughput, 2),
                "speedup_unbatched": round(unbatched.throughput / one.throughput, 2),
                "concurrent_vs_offline": round(many.throughput / offline.images_per_s, 2)}
    if as_json:
        emit_json(figures)
    else:
        rows = [("one at a time", one), (f"{concurrency} clients, merged batches", many),
                (f"{concurrency} clients, batching off", unbatched)]
        for label, result in rows:
            out.print(f"{label:<34} {result.throughput:7.1f} req/s   p50 {result.percentile(50) * 1000:7.1f} ms   "
                      f"p99 {result.percentile(99) * 1000:7.1f} ms", highlight=False)
        out.print(f"{'offline (Classifier.classify_many)':<34} {offline.images_per_s:7.1f} images/s  "
                  f"({offline.runtime})", highlight=False)
        out.print(f"throughput with {concurrency} clients: {figures['concurrent_vs_offline']:.2f}× offline "
                  f"(target ≥ 0.8×), {figures['speedup']:.2f}× one at a time ({figures['speedup_unbatched']:.2f}× "
                  f"without batching); {figures['mean_batch_images']} images per merged batch", highlight=False)
        if load:
            result = figures["load"]
            out.print(f"load test: {result['requests']} mixed requests from 32 clients, {result['server_errors']} 5xx, "
                      f"statuses {result['statuses']}, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms", highlight=False)
        out.print(f"({name}, {_machine()})", highlight=False)
    if note:
        err.print(note, highlight=False)


def _serve_payloads(images: Path | None, model: str) -> list[bytes]:
    """Image files to send: the user's, demo shapes for the demo model, else photo-sized JPEGs."""
    if images is not None or model != "demo":
        return [path.read_bytes() for path in _photos(images, 16)]
    from cliplens.bench.serve import demo_payloads

    return demo_payloads(16)
