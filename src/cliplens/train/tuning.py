"""Which weights a fine-tune changes: all of them, all but one tower (``--freeze``), or low-rank adapters
(``--lora``, through peft).

Freezing the image tower and tuning the text side is LiT's recipe (Zhai et al. 2022): the image
features the model learned on its large data stay as they were. A frozen text tower still learns the
rows of words new to the model (nothing else could give them meaning). LoRA (Hu et al. 2021) trains a
rank-r update of each attention and MLP projection, and the rows of new words through peft's trainable
tokens, so the saved adapter is a small fraction of the model.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from .vocab import token_embedding

FREEZABLE = ("image", "text")
#: The linear layers LoRA adapts in CLIP-family towers (attention and MLP projections).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def _tower(model, tower: str) -> list[torch.nn.Module]:
    if tower == "image":
        names = ("vision_model", "visual_projection")
    else:
        names = ("text_model", "text_projection")
    modules = [getattr(model, name) for name in names if getattr(model, name, None) is not None]
    if not modules:
        raise UsageError(f"this model has no {tower} tower to freeze", value=tower, parameter="freeze")
    return modules


def freeze_tower(model, tower: str, new_rows: list[int]) -> None:
    """Stop gradients into one tower; with the text tower frozen, the rows of ``new_rows`` still learn."""
    if tower not in FREEZABLE:
        raise UsageError(f"choose from {', '.join(FREEZABLE)}", value=tower, parameter="freeze")
    for module in _tower(model, tower):
        for param in module.parameters():
            param.requires_grad_(False)
    if tower == "text" and new_rows:
        weight = token_embedding(model).weight
        weight.requires_grad_(True)
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype)
        mask[new_rows] = 1.0
        weight.register_hook(lambda grad: grad * mask.to(grad.device))
        weight.cliplens_trained_rows = len(new_rows)  # counted by trained_parameters


def add_lora(model, rank: int, new_rows: list[int], base: str):
    """Wrap the model in peft LoRA adapters of ``rank`` (and trainable rows for new words); ``base`` is what
    the adapter's config names as its base model."""
    if rank < 1:
        raise UsageError(f"must be at least 1 (got {rank})", parameter="lora")
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UsageError("LoRA needs peft: pip install 'cliplens[train]'", parameter="lora") from None
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in present]
    if not targets:
        raise UsageError("this model has none of the projections LoRA adapts here "
                         f"({', '.join(LORA_TARGETS)})", parameter="lora")
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets,
                        trainable_token_indices={"token_embedding": new_rows} if new_rows else None)
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base
    return peft_model


def trained_parameters(model) -> int:
    """How many numbers the optimiser changes (a frozen text tower's new rows count, its other rows not)."""
    total = 0
    for param in model.parameters():
        if param.requires_grad:
            rows = getattr(param, "cliplens_trained_rows", None)
            total += param.numel() if rows is None else rows * param.shape[1]
    return total
