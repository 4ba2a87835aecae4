"""Adversarial training (Madry et al. 2018): each batch's images are first moved, within a small L2 ball, in the
direction that raises the loss most (projected gradient ascent), and the model learns from the moved ones.

A model trained so does not change its answer for changes a person cannot see, and its input gradients point at
what a person would change: Santurkar et al. 2019 ("Image synthesis with a single (robust) classifier") draw
recognisable pictures by following such a model's gradients, which is what ``cliplens dream`` does.
"""

from __future__ import annotations

from typing import Callable

import torch

#: Each ascent step's length as a part of the radius × steps (Madry et al.'s 2.5 / steps of the radius).
STEP_FACTOR = 2.5


def pixels_01(pixels, rescale_factor: float) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float32 (N, 3, H, W) in [0, 1]: what the attack moves."""
    images = torch.from_numpy(pixels).float() * float(rescale_factor)
    return images.permute(0, 3, 1, 2).contiguous()


def l2_attack(loss_of: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, radius: float,
              steps: int) -> torch.Tensor:
    """``images`` (N, 3, H, W) in [0, 1], each moved by at most ``radius`` (L2, in [0, 1] pixel units) to raise
    ``loss_of(images)``: ``steps`` normalised gradient steps, each projected back onto the ball and the
    valid pixel range. Gradients go to the perturbation only, never to the model's parameters."""
    if radius <= 0 or steps < 1:
        return images
    step_size = STEP_FACTOR * radius / steps
    delta = torch.zeros_like(images)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_of((images + delta).clamp(0, 1)), delta)
        norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta.detach() + step_size * grad / norms
        lengths = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = delta * (radius / lengths).clamp(max=1.0)
    return (images + delta).clamp(0, 1).detach()
