"""Contrastive (InfoNCE) training and fine-tuning of CLIP models on image–caption pairs.

Checkpoints are plain Hugging Face folders (config, safetensors, tokenizer, preprocessor config),
so :func:`cliplens.load_model` and transformers itself both load them.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageLoadError, UsageError
from .files import atomic_path, atomic_write_json
from .inputs.images import load_image
from .inputs.pairs import Pair, read_pairs
from .models import ImagePreprocessor, resolve_model_dir

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")  # eos must not be id 2: transformers' legacy CLIP pooling

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


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved beside the checkpoint."""

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
    """What a finished run reports."""

    out: Path
    steps: int
    final_loss: float
    images: int
    skipped: list[ImageLoadError]


def build_word_tokenizer(captions: list[str], context_length: int):
    """A lower-cased word-level tokenizer over the captions' vocabulary, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(captions, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    bos, eos = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", bos), ("<eos>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=context_length,
    )


def extend_word_vocab(model, tokenizer, captions: list[str]):
    """Give a word-level tokenizer the captions' new words (fresh ids at the end) and the model rows for them.

    Fine-tuning a word-level model on captions with words it has never seen would map them all to
    ``<unk>``; existing ids keep their meaning, so the model's knowledge carries over. Other
    tokenizers (BPE, SentencePiece) cover any text and are returned unchanged.
    """
    from tokenizers import models

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "WordLevel":
        return tokenizer, []
    vocab = backend.get_vocab(with_added_tokens=False)
    words = dict.fromkeys(w for c in captions for w, _ in backend.pre_tokenizer.pre_tokenize_str(
        backend.normalizer.normalize_str(c)))
    new = [w for w in words if w not in vocab]
    if not new:
        return tokenizer, []
    vocab.update({w: len(vocab) + i for i, w in enumerate(new)})
    backend.model = models.WordLevel(vocab, unk_token="<unk>")
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token,
        pad_token=tokenizer.pad_token, unk_token=tokenizer.unk_token, model_max_length=tokenizer.model_max_length,
    )
    _grow_token_embedding(model, len(vocab))
    text_config = getattr(model.config, "text_config", model.config)
    text_config.vocab_size = len(vocab)
    return tokenizer, new


def _grow_token_embedding(model, size: int) -> None:
    """Append rows to the text token embedding, each starting at the mean of the existing rows."""
    embeddings = model.text_model.embeddings
    old = embeddings.token_embedding
    new = torch.nn.Embedding(size, old.embedding_dim, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = old.weight.mean(0)
    embeddings.token_embedding = new


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


class _PairImages:
    """Decoded, resized uint8 images for the pairs, kept in memory or decoded on demand."""

    def __init__(self, pairs: list[Pair], preprocessor: ImagePreprocessor, cache: bool,
                 on_load: Callable[[int, int], None] | None):
        self.preprocessor = preprocessor
        self.pairs: list[Pair] = []
        self.errors: dict[str, ImageLoadError] = {}  # by source, so a file failing every epoch is reported once
        self.cached: np.ndarray | None = None
        height, width = preprocessor.output_size
        if cache:
            arrays = []
            for i, pair in enumerate(pairs):
                try:
                    arrays.append(preprocessor.resize_crop(load_image(pair.path)))
                    self.pairs.append(pair)
                except ImageLoadError as exc:
                    self.errors[exc.source] = exc
                if on_load is not None:
                    on_load(i + 1, len(pairs))
            self.cached = np.stack(arrays) if arrays else np.zeros((0, height, width, 3), np.uint8)
        else:
            self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def skipped(self) -> list[ImageLoadError]:
        return list(self.errors.values())

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, list[str]]:
        if self.cached is not None:
            return self.cached[indices], [self.pairs[i].caption for i in indices]
        arrays, captions = [], []
        for i in indices:
            try:
                arrays.append(self.preprocessor.resize_crop(load_image(self.pairs[i].path)))
                captions.append(self.pairs[i].caption)
            except ImageLoadError as exc:
                self.errors[exc.source] = exc
        if not arrays:
            last = next(reversed(self.errors.values()))
            raise UsageError(f"no image in a batch of {len(indices)} could be read, e.g. {last}", parameter="pairs")
        return np.stack(arrays), captions


def contrastive_loss(logits: torch.Tensor, captions: list[str], soft: bool, sigmoid: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE over a batch (or SigLIP's sigmoid loss); identical captions count as matches when ``soft``."""
    n = logits.shape[0]
    if soft:
        ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
        cap = torch.tensor([ids[c] for c in captions])
        match = (cap[:, None] == cap[None, :]).float()
    else:
        match = torch.eye(n)
    if sigmoid:
        signs = 2 * match - 1
        return -F.logsigmoid(signs * logits).sum() / n
    targets = match / match.sum(1, keepdim=True)
    loss_i = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(targets.T * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _save(model, tokenizer, preprocessor: ImagePreprocessor, out: Path, config: TrainConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
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


def train(config: TrainConfig, *, resume: bool = False, on_step: Callable[[TrainStep], None] | None = None,
          on_load: Callable[[int, int], None] | None = None,
          on_checkpoint: Callable[[int, Any], None] | None = None) -> TrainResult:
    """Train (or fine-tune with ``config.init``) a CLIP-style model on the pairs file; save to ``config.out``."""
    threads_before = torch.get_num_threads()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)  # restored when training ends
    try:
        return _train(config, resume=resume, on_step=on_step, on_load=on_load, on_checkpoint=on_checkpoint)
    finally:
        torch.set_num_threads(threads_before)


def _train(config: TrainConfig, *, resume: bool, on_step, on_load, on_checkpoint) -> TrainResult:
    from transformers import AutoModel, AutoTokenizer

    if config.steps < 1:
        raise UsageError(f"must be at least 1 (got {config.steps})", parameter="steps")
    if config.batch_size < 2:
        raise UsageError(f"must be at least 2 (got {config.batch_size})", parameter="batch_size")
    out = Path(config.out)
    state_path = out / STATE_FILE
    _seed_everything(config.seed)
    pairs = read_pairs(config.pairs)

    state = _resume_state(state_path, config.steps) if resume else None  # checked before images load
    if resume or config.init:
        source = out if resume else resolve_model_dir(config.init)
        model = AutoModel.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        preprocessor = ImagePreprocessor.from_pretrained(source)
        if config.init and not resume:
            tokenizer, _ = extend_word_vocab(model, tokenizer, [p.caption for p in pairs])
    else:
        preset = _preset(config.preset)
        tokenizer = build_word_tokenizer([p.caption for p in pairs], preset["context_length"])
        from transformers import CLIPModel

        model = CLIPModel(build_config(preset, tokenizer))
        size = preset["image_size"]
        preprocessor = ImagePreprocessor(shortest_edge=size, crop=(size, size))

    sigmoid = getattr(model.config, "model_type", "") in ("siglip", "siglip2")
    height, width = preprocessor.output_size
    cache = config.cache_images
    if cache is None:
        cache = len(pairs) * height * width * 3 <= config.cache_limit_bytes
    data = _PairImages(pairs, preprocessor, cache, on_load)
    if len(data) < 2:
        raise UsageError("fewer than two readable images to train on", value=str(config.pairs), parameter="pairs")
    batch_size = min(config.batch_size, len(data))
    steps_per_epoch = max(1, len(data) // batch_size)

    decay, no_decay = [], []
    for name, param in model.named_parameters():  # no decay on gains, biases, embeddings, temperature
        (decay if param.ndim >= 2 and "embedding" not in name else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.steps, pct_start=config.warmup, anneal_strategy="cos",
        cycle_momentum=False,
    )
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        torch.set_rng_state(state["torch_rng"])

    max_scale = math.log(100.0)
    loss_value = float("nan")
    model.train()
    for step in range(start, config.steps):
        epoch, offset = divmod(step, steps_per_epoch)
        indices = _order(len(data), config.seed, epoch)[offset * batch_size : (offset + 1) * batch_size]
        pixels, captions = data.batch(indices)
        pixel_values = torch.from_numpy(preprocessor.normalize(pixels))
        tokens = tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        outputs = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                        pixel_values=pixel_values)
        loss = contrastive_loss(outputs.logits_per_image, captions, config.soft_targets, sigmoid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, max_scale)
        loss_value = loss.item()
        done = step + 1
        if on_step is not None:
            on_step(TrainStep(done, config.steps, loss_value, model.logit_scale.exp().item(),
                              scheduler.get_last_lr()[0]))
        if done == config.steps or (config.save_every and done % config.save_every == 0):
            model.eval()
            _save(model, tokenizer, preprocessor, out, config)
            with atomic_path(state_path) as tmp:
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": done,
                            "torch_rng": torch.get_rng_state()}, tmp)
            if on_checkpoint is not None:
                on_checkpoint(done, model)
            model.train()
    return TrainResult(out=out, steps=config.steps, final_loss=loss_value, images=len(data), skipped=data.skipped)
