"""Contrastive (InfoNCE) training and fine-tuning of CLIP models on image–caption pairs.

Checkpoints are plain Hugging Face folders (config, safetensors, tokenizer, preprocessor config), so
:func:`cliplens.load_model` and transformers itself both load them; a LoRA run saves only its adapter
(see :mod:`cliplens.models.adapters`). A fine-tune measures zero-shot top-1 on held-out sets before
training, at every save and at the end (``train_report.json``), and with ``wise`` ends by interpolating
between the weights it started from and the ones it learned (:mod:`.wise`).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ImageLoadError, UsageError
from ..files import atomic_path, atomic_write_json, display_path
from ..inputs.pairs import read_pairs
from ..scores.calibration import CALIBRATION_FILE
from ..models import ALIASES, DEMO_DIR, ImagePreprocessor, TransformersEncoder, resolve_model_dir
from .adversarial import l2_attack, pixels_01
from .batches import PairImages
from .held_out import HeldOutSet, demo_keep_set, read_held_out, zero_shot_top1
from .loss import contrastive_loss
from .tuning import FREEZABLE, add_lora, freeze_tower, trained_parameters
from .vocab import align_token_embedding, build_word_tokenizer, new_words, spare_ids, vocab_size, with_words
from .wise import DEFAULT_BOUND, WisePoint, interpolate, parse_alpha, search_alpha

#: Architectures for training from scratch. ``demo`` is the one the bundled model uses.
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "image_size": 64, "patch_size": 8, "vision_layers": 4, "text_layers": 3, "width": 128,
        "heads": 4, "mlp": 512, "projection_dim": 128, "context_length": 24,
    },
    "small": {
        "image_size": 128, "patch_size": 16, "vision_layers": 6, "text_layers": 4, "width": 256,
        "heads": 4, "mlp": 1024, "projection_dim": 256, "context_length": 32,
    },
}

STATE_FILE = "trainer_state.pt"
REPORT_FILE = "train_report.json"
FINE_TUNED = "fine-tuned"  # with wise: the run's own checkpoints, beside the interpolated model
REPORT_FORMAT = "cliplens-train/1"


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved beside the checkpoint.

    ``eval_new`` and ``eval_keep``: labelled datasets (as :func:`cliplens.evaluate` reads them) for held-out
    zero-shot top-1 on the new domain and on what the model should keep knowing (the demo model keeps its
    own shapes when none is given). ``freeze``: ``image`` or ``text``. ``lora``: the adapters' rank (0:
    none). ``wise``: ``"auto"`` or α in [0, 1]; ``wise_bound``: the keep-set loss in points ``auto`` allows.
    """

    pairs: str
    out: str
    preset: str = "demo"
    init: str | None = None
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.1
    seed: int = 0
    save_every: int = 500
    soft_targets: bool = True
    cache_images: bool | None = None  # None: cache when they fit in ``cache_limit_bytes``
    cache_limit_bytes: int = 6 * 2**30
    num_threads: int | None = None
    eval_new: str | None = None
    eval_keep: str | None = None
    freeze: str | None = None
    lora: int = 0
    wise: str | float | None = None
    wise_bound: float = DEFAULT_BOUND
    adversarial: float = 0.0
    adversarial_steps: int = 3

    @property
    def method(self) -> str:
        """How the weights are tuned, in words: ``full``, ``freeze image``, ``lora 8``, ``freeze text, adversarial
        1.0``."""
        method = f"freeze {self.freeze}" if self.freeze else f"lora {self.lora}" if self.lora else "full"
        return f"{method}, adversarial {self.adversarial:g}" if self.adversarial else method


@dataclass
class TrainStep:
    """What the progress callback sees after each step."""

    step: int
    total: int
    loss: float
    logit_scale: float
    lr: float


@dataclass
class TrainResult:
    """What a finished run reports; ``report`` is what ``train_report.json`` holds."""

    out: Path
    steps: int
    final_loss: float
    images: int
    skipped: list[ImageLoadError]
    report: dict = field(default_factory=dict)


def build_config(preset: dict[str, Any], tokenizer):
    """A transformers CLIPConfig for a preset and tokenizer."""
    from transformers import CLIPConfig

    text = dict(
        vocab_size=len(tokenizer), hidden_size=preset["width"], intermediate_size=preset["mlp"],
        num_hidden_layers=preset["text_layers"], num_attention_heads=preset["heads"],
        max_position_embeddings=preset["context_length"], pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        projection_dim=preset["projection_dim"],
    )
    vision = dict(
        image_size=preset["image_size"], patch_size=preset["patch_size"], hidden_size=preset["width"],
        intermediate_size=preset["mlp"], num_hidden_layers=preset["vision_layers"],
        num_attention_heads=preset["heads"], projection_dim=preset["projection_dim"],
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=preset["projection_dim"])


def _preset(name: str) -> dict[str, Any]:
    if name in PRESETS:
        return PRESETS[name]
    path = Path(name)
    if path.is_file():
        preset = {**PRESETS["demo"], **json.loads(path.read_text())}
        return preset
    raise UsageError(f"unknown model config {name!r}: use one of {', '.join(PRESETS)} or a JSON file",
                     parameter="config")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def portable_base(init: str) -> str:
    """How an adapter names its base: a hub id as it is, an alias or folder by its absolute path."""
    target = ALIASES.get(init, init)
    path = Path(target).expanduser()
    return str(path.resolve()) if path.is_dir() else target


def weights_bytes(folder: Path) -> int:
    """The size of a checkpoint's weights (a whole model's or an adapter's)."""
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _save(model, tokenizer, preprocessor: ImagePreprocessor, out: Path, config: TrainConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if config.lora:
        model.save_pretrained(out, safe_serialization=True, save_embedding_layers=False)
    else:
        model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    atomic_write_json(out / "preprocessor_config.json", preprocessor.to_config())
    atomic_write_json(out / "cliplens_train.json", asdict(config))


def _resume_state(state_path: Path, steps: int) -> dict:
    """The saved optimiser/scheduler state of an unfinished run planned for ``steps``."""
    out = state_path.parent
    if not state_path.exists():
        raise UsageError(f"nothing to resume in {out} (no {STATE_FILE})", parameter="resume")
    state = torch.load(state_path, weights_only=False)
    planned = state["scheduler"].get("total_steps", steps)
    if planned != steps:
        raise UsageError(f"the run in {out} was planned for {planned} steps; resume it with the same number",
                         parameter="steps")
    if state["step"] >= steps:
        raise UsageError(f"the run in {out} already trained for all {state['step']} steps", parameter="resume")
    return state


def check_config(config: TrainConfig) -> float | str | None:
    """Refuse settings that cannot go together before anything loads; the parsed ``wise``."""
    if config.steps < 1:
        raise UsageError(f"must be at least 1 (got {config.steps})", parameter="steps")
    if config.batch_size < 2:
        raise UsageError(f"must be at least 2 (got {config.batch_size})", parameter="batch_size")
    if config.lora < 0:
        raise UsageError(f"must be at least 1 (got {config.lora})", parameter="lora")
    if not config.adversarial >= 0:
        raise UsageError(f"must not be negative (got {config.adversarial})", parameter="adversarial")
    if config.adversarial_steps < 1:
        raise UsageError(f"must be at least 1 (got {config.adversarial_steps})", parameter="adversarial_steps")
    if config.freeze is not None and config.freeze not in FREEZABLE:
        raise UsageError(f"choose from {', '.join(FREEZABLE)}", value=config.freeze, parameter="freeze")
    wise = parse_alpha(config.wise)
    tuned = [name for name, on in (("freeze", config.freeze), ("lora", config.lora), ("wise", wise is not None)) if on]
    if tuned and not config.init:
        raise UsageError("is for fine-tuning a model: give the model to start from (init)", parameter=tuned[0])
    if config.freeze and config.lora:
        raise UsageError("LoRA already leaves every original weight as it was; use one of freeze and lora",
                         parameter="freeze")
    if config.lora and wise is not None:
        raise UsageError("a LoRA adapter is interpolated by scaling it, not by wise; use wise with a full or "
                         "frozen-tower fine-tune", parameter="wise")
    if wise == "auto" and not config.eval_new:
        raise UsageError("auto picks the interpolation on held-out sets: give the new domain's (eval_new)",
                         parameter="wise")
    return wise


class _Report:
    """``train_report.json``: held-out figures before, during and after training, and how they were made."""

    def __init__(self, config: TrainConfig, out: Path, new: HeldOutSet | None, keep: HeldOutSet | None,
                 keep_note: str | None, words: list[str], grown: int, resumed_from: int | None, calibrated: bool):
        self.path = out / REPORT_FILE
        previous = {}
        if resumed_from is not None and self.path.exists():
            previous = json.loads(self.path.read_text(encoding="utf-8"))
        self.data: dict[str, Any] = {
            "format": REPORT_FORMAT,
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "model": config.init, "pairs": display_path(config.pairs), "out": display_path(out),
            "method": config.method, "steps": config.steps, "batch_size": config.batch_size, "lr": config.lr,
            "seed": config.seed, "new_words": words, "grown_rows": grown, "original_calibration": calibrated,
            "eval": {"new": new.describe() if new else None, "keep": keep.describe() if keep else None,
                     "keep_note": keep_note},
            "evaluations": [row for row in previous.get("evaluations", []) if row["step"] <= (resumed_from or 0)],
        }

    @property
    def evaluations(self) -> list[dict]:
        return self.data["evaluations"]

    def original(self) -> dict | None:
        return next((row for row in self.evaluations if row["step"] == 0), None)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data)


def train(config: TrainConfig, *, resume: bool = False, on_step: Callable[[TrainStep], None] | None = None,
          on_load: Callable[[int, int], None] | None = None,
          on_checkpoint: Callable[[int, Any], None] | None = None,
          on_evaluation: Callable[[dict], None] | None = None) -> TrainResult:
    """Train (or fine-tune with ``config.init``) a CLIP-style model on the pairs file; save to ``config.out``.

    ``on_evaluation`` hears each held-out measurement (``{"step", "new", "keep"}``, and ``"alpha"`` for
    the points of a wise search) as it is made.
    """
    threads_before = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)  # restored when training ends
    try:
        return _Run(config, resume, on_load).fit(on_step, on_checkpoint, on_evaluation)
    finally:
        torch.set_num_threads(threads_before)


class _Run:
    """One training run: the model set up as the config asks, its data, held-out sets and report."""

    def __init__(self, config: TrainConfig, resume: bool, on_load):
        from transformers import AutoModel, AutoTokenizer

        self.config, self.resume = config, resume
        self.wise = check_config(config)
        self.out = Path(config.out)
        self.run_dir = self.out / FINE_TUNED if self.wise is not None else self.out
        state_path = self.run_dir / STATE_FILE
        _seed_everything(config.seed)
        pairs = read_pairs(config.pairs)
        self.state = _resume_state(state_path, config.steps) if resume else None  # checked before images load
        captions = [p.caption for p in pairs]
        self.words: list[str] = []
        self.new_rows: list[int] = []
        if config.init:
            self.init_dir = resolve_model_dir(config.init)
            model = AutoModel.from_pretrained(self.init_dir)
            self.init_tokenizer = AutoTokenizer.from_pretrained(self.init_dir)
            self.preprocessor = ImagePreprocessor.from_pretrained(self.init_dir)
            if resume:
                self.tokenizer = AutoTokenizer.from_pretrained(self.run_dir)
            else:
                self.words = new_words(self.init_tokenizer, captions)
                self.tokenizer = with_words(self.init_tokenizer, self.words) if self.words else self.init_tokenizer
            self.grown = max(0, vocab_size(self.tokenizer) - vocab_size(self.init_tokenizer))
            if config.lora and self.grown:
                raise UsageError(f"the captions bring {len(self.words)} words the model does not know, and it has "
                                 f"room for {len(spare_ids(self.init_tokenizer))}; a LoRA adapter cannot grow the base "
                                 "model's vocabulary: fine-tune without lora", parameter="lora")
            self.new_rows = align_token_embedding(model, self.init_tokenizer, self.tokenizer)
            if resume and not config.lora:
                model = AutoModel.from_pretrained(self.run_dir)
            self.words = self.words or [w for w, i in self.tokenizer.get_vocab().items() if i in set(self.new_rows)]
        elif resume:
            model = AutoModel.from_pretrained(self.out)
            self.tokenizer = AutoTokenizer.from_pretrained(self.out)
            self.preprocessor = ImagePreprocessor.from_pretrained(self.out)
            self.grown = 0
        else:
            preset = _preset(config.preset)
            self.tokenizer = build_word_tokenizer(captions, preset["context_length"])
            from transformers import CLIPModel

            model = CLIPModel(build_config(preset, self.tokenizer))
            size = preset["image_size"]
            self.preprocessor = ImagePreprocessor(shortest_edge=size, crop=(size, size))
            self.grown = 0
        if config.freeze:
            freeze_tower(model, config.freeze, self.new_rows)
        if config.lora:
            model = add_lora(model, config.lora, self.new_rows, portable_base(config.init))
            if resume:
                from peft import set_peft_model_state_dict
                from safetensors.torch import load_file

                set_peft_model_state_dict(model, load_file(str(self.run_dir / "adapter_model.safetensors")))
        self.model = model
        self.sigmoid = getattr(model.config, "model_type", "") in ("siglip", "siglip2")
        height, width = self.preprocessor.output_size
        cache = config.cache_images
        if cache is None:
            cache = len(pairs) * height * width * 3 <= config.cache_limit_bytes
        self.new_set = read_held_out(config.eval_new, self.preprocessor, "new") if config.eval_new else None
        self.keep_set, self.keep_note = self._keep_set()
        self.data = PairImages(pairs, self.preprocessor, cache, on_load)
        if len(self.data) < 2:
            raise UsageError("fewer than two readable images to train on", value=str(config.pairs), parameter="pairs")
        self.encoder = TransformersEncoder.wrap(model, self.tokenizer, self.preprocessor, config.init or "training")
        calibrated = bool(config.init) and (Path(self.init_dir) / CALIBRATION_FILE).is_file()
        self.report = _Report(config, self.out, self.new_set, self.keep_set, self.keep_note, self.words, self.grown,
                              self.state["step"] if self.state else None, calibrated)

    def _keep_set(self) -> tuple[HeldOutSet | None, str | None]:
        config = self.config
        if config.eval_keep:
            return read_held_out(config.eval_keep, self.preprocessor, "keep"), None
        if not config.init:
            return None, None
        if Path(self.init_dir).resolve() == DEMO_DIR.resolve():
            return demo_keep_set(self.preprocessor), "none given: the demo model's own shapes"
        return None, "none given: what the model already knew is not measured"

    # --- held-out evaluation --------------------------------------------------------------------------------

    @property
    def evaluating(self) -> bool:
        return self.new_set is not None or self.keep_set is not None

    def measure(self) -> dict:
        row = {}
        for role, held in (("new", self.new_set), ("keep", self.keep_set)):
            row[role] = zero_shot_top1(self.encoder, held) if held is not None else None
        return row

    def _evaluate(self, step: int, on_evaluation) -> None:
        if not self.evaluating:
            return
        row = {"step": step, **self.measure()}
        self.report.evaluations.append(row)
        self.report.write()
        if on_evaluation is not None:
            on_evaluation(row)

    # --- training -------------------------------------------------------------------------------------------

    def _optimizer(self):
        config = self.config
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():  # no decay on gains, biases, embeddings, temperature
            if param.requires_grad:
                (decay if param.ndim >= 2 and "embedding" not in name else no_decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=(0.9, 0.98), eps=1e-6,
        )
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=config.warmup, anneal_strategy="cos",
            cycle_momentum=False,
        )
        return optimizer, scheduler

    def fit(self, on_step, on_checkpoint, on_evaluation) -> TrainResult:
        config, model, data = self.config, self.model, self.data
        batch_size = min(config.batch_size, len(data))
        steps_per_epoch = max(1, len(data) // batch_size)
        optimizer, scheduler = self._optimizer()
        start = 0
        if self.state is not None:
            optimizer.load_state_dict(self.state["optimizer"])
            scheduler.load_state_dict(self.state["scheduler"])
            start = self.state["step"]
            torch.set_rng_state(self.state["torch_rng"])
        else:
            self._evaluate(0, on_evaluation)
        self.report.data["trained_parameters"] = trained_parameters(model)
        self.report.data["total_parameters"] = sum(p.numel() for name, p in model.named_parameters()
                                                   if "lora_" not in name and "trainable_tokens" not in name)
        scale = model.logit_scale
        max_scale = math.log(100.0)
        loss_value = float("nan")
        model.train()
        for step in range(start, config.steps):
            epoch, offset = divmod(step, steps_per_epoch)
            indices = _order(len(data), config.seed, epoch)[offset * batch_size : (offset + 1) * batch_size]
            pixels, captions = data.batch(indices)
            tokens = self.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")

            def loss_of(pixel_values, tokens=tokens, captions=captions):
                outputs = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                                pixel_values=pixel_values)
                return contrastive_loss(outputs.logits_per_image, captions, config.soft_targets, self.sigmoid)

            if config.adversarial:
                normalise = self.preprocessor.normalize_tensor
                moved = l2_attack(lambda images: loss_of(normalise(images)),
                                  pixels_01(pixels, self.preprocessor.rescale_factor), config.adversarial,
                                  config.adversarial_steps)
                loss = loss_of(normalise(moved))
            else:
                loss = loss_of(torch.from_numpy(self.preprocessor.normalize(pixels)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                scale.clamp_(0, max_scale)
            loss_value = loss.item()
            done = step + 1
            if on_step is not None:
                on_step(TrainStep(done, config.steps, loss_value, scale.exp().item(), scheduler.get_last_lr()[0]))
            if done == config.steps or (config.save_every and done % config.save_every == 0):
                model.eval()
                _save(model, self.tokenizer, self.preprocessor, self.run_dir, config)
                with atomic_path(self.run_dir / STATE_FILE) as tmp:
                    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "step": done, "torch_rng": torch.get_rng_state()}, tmp)
                self._evaluate(done, on_evaluation)
                if on_checkpoint is not None:
                    on_checkpoint(done, model)
                model.train()
        model.eval()
        self.report.data["checkpoint_bytes"] = weights_bytes(self.run_dir)
        if self.wise is not None:
            self._wise(on_evaluation)
        self._summarise()
        self.report.write()
        return TrainResult(out=self.out, steps=config.steps, final_loss=loss_value, images=len(data),
                           skipped=data.skipped, report=self.report.data)

    # --- weight-space ensembling ------------------------------------------------------------------------------

    def start_weights(self) -> dict[str, torch.Tensor]:
        """The weights the fine-tune started from: the original's, with the fine-tune's vocabulary."""
        from transformers import AutoModel

        original = AutoModel.from_pretrained(self.init_dir)
        align_token_embedding(original, self.init_tokenizer, self.tokenizer)
        return {k: v.detach().clone() for k, v in original.state_dict().items()}

    def _wise(self, on_evaluation) -> None:
        start = self.start_weights()
        tuned = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        original = self.report.original()

        def at(alpha: float) -> WisePoint:
            self.model.load_state_dict(interpolate(start, tuned, alpha))
            row = self.measure()
            if on_evaluation is not None:
                on_evaluation({"step": self.config.steps, "alpha": alpha, **row})
            return WisePoint(alpha, row["new"], row["keep"])

        entry: dict[str, Any] = {"auto": self.wise == "auto", "bound_points": self.config.wise_bound,
                                 "fine_tuned": display_path(self.run_dir)}
        if self.wise == "auto":
            point, curve = search_alpha(at, original["keep"] if original else None, self.config.wise_bound)
            entry["curve"] = [p.to_dict() for p in curve]
            self.model.load_state_dict(interpolate(start, tuned, point.alpha))
        elif self.evaluating:
            point = at(float(self.wise))
        else:
            point = WisePoint(float(self.wise), None, None)
            self.model.load_state_dict(interpolate(start, tuned, point.alpha))
        entry.update({"alpha": point.alpha, "new": point.new, "keep": point.keep})
        self.report.data["wise"] = entry
        _save(self.model, self.tokenizer, self.preprocessor, self.out, self.config)

    def _summarise(self) -> None:
        rows = self.report.evaluations
        data = self.report.data
        data["original"] = {k: v for k, v in (self.report.original() or {}).items() if k != "step"} or None
        final = next((row for row in reversed(rows) if row["step"] == self.config.steps), None)
        data["fine_tuned"] = {k: v for k, v in final.items() if k != "step"} if final else None
        data["final"] = ({"new": data["wise"]["new"], "keep": data["wise"]["keep"]} if "wise" in data
                         else data["fine_tuned"])
