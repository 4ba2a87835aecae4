"""Zero-shot accuracy and recall on hand-made vectors, where the right answer is known."""

import numpy as np
import pytest

from cliplens.scores.metrics import text_to_image_recall, zero_shot_top_k


def test_zero_shot_top_k():
    images = np.eye(3, dtype=np.float32)
    labels = np.array([[1, 0, 0], [0, 0.9, 0.1], [0, 1, 0]], np.float32)
    assert zero_shot_top_k(images, labels, [0, 1, 2], k=1) == pytest.approx(1 / 3)  # image 1 → label 2
    assert zero_shot_top_k(images, labels, [0, 1, 2], k=2) == pytest.approx(2 / 3)


def test_recall_counts_images_with_the_same_caption_unless_strict():
    images = np.eye(3, dtype=np.float32)
    texts = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)  # query 0 finds image 1, its twin
    captions = ["red circle", "red circle", "blue star"]
    assert text_to_image_recall(texts, images, captions, k=1) == 1.0
    assert text_to_image_recall(texts, images, captions, k=1, strict=True) == pytest.approx(2 / 3)
