"""The contrastive losses: CLIP's symmetric InfoNCE and SigLIP's sigmoid loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
