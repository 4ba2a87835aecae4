"""Contrastive training and fine-tuning: the loop, held-out evaluation, frozen towers, LoRA and WiSE-FT."""

from .held_out import HeldOutSet, demo_keep_set, read_held_out, zero_shot_top1
from .loop import (FINE_TUNED, PRESETS, REPORT_FILE, STATE_FILE, TrainConfig, TrainResult, TrainStep, build_config,
                   check_config, train)
from .loss import contrastive_loss
from .tuning import FREEZABLE, LORA_TARGETS
from .vocab import SPARE_SLOTS, align_token_embedding, build_word_tokenizer, extend_word_vocab
from .wise import WisePoint, interpolate, parse_alpha, search_alpha

__all__ = [
    "FINE_TUNED", "FREEZABLE", "LORA_TARGETS", "PRESETS", "REPORT_FILE", "SPARE_SLOTS", "STATE_FILE", "HeldOutSet",
    "TrainConfig", "TrainResult", "TrainStep", "WisePoint", "align_token_embedding", "build_config",
    "build_word_tokenizer", "check_config", "contrastive_loss", "demo_keep_set", "extend_word_vocab",
    "interpolate", "parse_alpha", "read_held_out", "search_alpha", "train", "zero_shot_top1",
]
