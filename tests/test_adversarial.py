"""Adversarial training: the attack moves images within its L2 ball to raise the loss, and a run trains on the
moved images (its loss is the loss on them, above what the same weights score on the images as they are)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cliplens.errors import UsageError
from cliplens.inputs.demo_data import write_demo_data
from cliplens.train import TrainConfig, train
from cliplens.train.adversarial import l2_attack, pixels_01

TINY = {"image_size": 32, "patch_size": 16, "vision_layers": 1, "text_layers": 1, "width": 32, "heads": 2,
        "mlp": 64, "projection_dim": 16, "context_length": 24}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("adv")
    preset = root / "tiny.json"
    preset.write_text(json.dumps(TINY))
    return write_demo_data(root / "data", 48, seed=4, size=32), str(preset)


def test_the_attack_stays_in_its_ball_and_the_pixel_range_and_raises_the_loss():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((4, 3, 16, 16), generator=generator)
    target = torch.rand((4, 3, 16, 16), generator=generator)

    def loss_of(x):  # farther from a target: a loss whose best move is known
        return (x - target).pow(2).sum()

    moved = l2_attack(loss_of, images, radius=0.5, steps=5)
    shifts = (moved - images).flatten(1).norm(dim=1)
    assert torch.all(shifts <= 0.5 + 1e-5) and torch.all(shifts > 0.3)
    assert moved.min() >= 0 and moved.max() <= 1
    assert loss_of(moved) > loss_of(images)
    assert torch.equal(l2_attack(loss_of, images, radius=0.0, steps=3), images)
    pixels = (np.arange(2 * 4 * 4 * 3) % 256).astype(np.uint8).reshape(2, 4, 4, 3)
    expected = torch.tensor(pixels[1, 2, 3] / 255, dtype=torch.float32)
    assert torch.allclose(pixels_01(pixels, 1 / 255)[1, :, 2, 3], expected)


def test_an_adversarial_run_learns_from_moved_images(setup, tmp_path):
    pairs, preset = setup
    plain, moved = [], []
    common = dict(pairs=str(pairs), preset=preset, batch_size=16, lr=1e-3, save_every=0, steps=3, seed=1)
    train(TrainConfig(out=str(tmp_path / "plain"), **common), on_step=lambda s: plain.append(s.loss))
    result = train(TrainConfig(out=str(tmp_path / "robust"), adversarial=2.0, adversarial_steps=2, **common),
                   on_step=lambda s: moved.append(s.loss))
    # the first step starts from the same weights and batch: moved images score worse than the images themselves
    assert moved[0] > plain[0] + 0.01
    saved = json.loads((result.out / "cliplens_train.json").read_text())
    assert saved["adversarial"] == 2.0 and saved["adversarial_steps"] == 2
    assert result.report["method"] == "full, adversarial 2"


@pytest.mark.parametrize("settings, parameter", [({"adversarial": -1.0}, "adversarial"),
                                                 ({"adversarial": 1.0, "adversarial_steps": 0}, "adversarial_steps")])
def test_bad_adversarial_settings_are_refused(setup, tmp_path, settings, parameter):
    pairs, preset = setup
    with pytest.raises(UsageError) as caught:
        train(TrainConfig(pairs=str(pairs), out=str(tmp_path / "never"), preset=preset, steps=1, **settings))
    assert caught.value.parameter == parameter and not (tmp_path / "never").exists()
