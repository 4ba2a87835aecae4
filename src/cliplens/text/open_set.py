"""The open-set evidence of one model and calibration, ready to judge embedded images.

Classification, captions, search and the service all ask the same question of an embedded image:
does it lie outside the world the model was calibrated on? :class:`OpenSetEvidence` holds what that
takes (the calibration's detector and embedding sample, the reference vocabulary, the negative
captions' embeddings) and answers with a probability per image, or None when the calibration holds
no image-side evidence (then only the label-side "no label fits" speaks).
"""

from __future__ import annotations

import numpy as np

from ..models import Encoder
from ..scores.calibration import Calibration
from .negatives import best_negative
from .reference import ReferenceVocabulary, shared_vocabulary


class OpenSetEvidence:
    """P(out of distribution) for embedded images, from a calibration's :class:`~cliplens.scores.open_set.OpenSetDetector`."""

    def __init__(self, encoder: Encoder, calibration: Calibration | None,
                 reference: ReferenceVocabulary | None = None):
        self.encoder = encoder
        self.detector = calibration.open_set if calibration is not None else None
        if self.detector is not None and self.detector.sample.shape[1] != encoder.embed_dim:
            self.detector = None  # fitted for another embedding size: resolve_calibration names the mismatch
        self.reference = reference or (shared_vocabulary(tuple(calibration.reference)) if calibration else None)

    @property
    def available(self) -> bool:
        return self.detector is not None

    def features(self, image_vectors: np.ndarray, *, leave_one_out: bool = False) -> np.ndarray:
        """The detector's features of each image (see :data:`cliplens.scores.open_set.FEATURES`)."""
        _, reference_vectors = self.reference.for_model(self.encoder)
        reference_best = (np.asarray(image_vectors, np.float32) @ reference_vectors.T).max(axis=1)
        negative = best_negative(self.encoder, self.detector.negatives, image_vectors)
        return self.detector.features(image_vectors, reference_best, negative, leave_one_out=leave_one_out)

    def probability(self, image_vectors: np.ndarray) -> np.ndarray | None:
        """(N,) probabilities that each image lies outside the calibrated world, or None without the evidence."""
        if self.detector is None or len(image_vectors) == 0:
            return None if self.detector is None else np.zeros(0)
        return self.detector.probability(self.features(image_vectors))
