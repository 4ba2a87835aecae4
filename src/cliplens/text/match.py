"""How likely each embedded image shows what one text says: "none of these" read the other way round.

Search ranks images by how well they fit a query, but a ranking always has a top 10, even for a query
that no image shows. ``match`` is a probability instead: the label-side detector of classification
(the text's logit against the image's best reference caption, leaving out captions that are more or
less specific forms of the text) times the probability that the image lies inside the calibrated world
(the image-side open-set evidence). The text is scored with the calibration's prompts, as its labels were.
A text with words the model cannot read (a word-level tokenizer reads them as <unk>) matches nothing:
the model cannot have seen what it does not know, and it is warned about.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..inputs.wordlists import imagenet_classes
from ..models import Encoder
from ..scores.calibration import Calibration, CalibrationNote, FitDetector, resolve_calibration
from .open_set import OpenSetEvidence
from .prompts import DEFAULT_TEMPLATE, LabelWarning, label_embeddings
from .reference import shared_vocabulary


class TextMatch:
    """P(an image shows ``text``) for embedded images; ``calibration`` as :class:`~cliplens.Classifier` takes it
    (None: the one shipped beside the model, if any; False: none, the detector's defaults)."""

    def __init__(self, encoder: Encoder, text: str,
                 calibration: Calibration | str | os.PathLike | bool | None = None):
        self.encoder = encoder
        self.text = text
        with warnings.catch_warnings():  # an index's vectors come from the ranking runtime by design: its
            warnings.simplefilter("ignore", CalibrationNote)  # matches may differ by that runtime's bounds
            self.calibration = resolve_calibration(calibration, encoder)
        self.detector = self.calibration.detector if self.calibration else FitDetector()
        reference = self.calibration.reference if self.calibration else imagenet_classes()
        self.reference = shared_vocabulary(tuple(reference))
        self.kept = self.reference.kept_for(encoder, [text])
        templates = self.calibration.templates if self.calibration else [DEFAULT_TEMPLATE]
        with warnings.catch_warnings():  # a text the model cannot read is the query's business, not the match's
            warnings.simplefilter("ignore", LabelWarning)
            self.text_vector = label_embeddings(encoder, [text], templates)[0]
        self.open_set = OpenSetEvidence(encoder, self.calibration, self.reference)
        self.readable = bool(encoder.readable([text])[0])
        if not self.readable:
            warnings.warn(f"{encoder.name} does not know every word of {text!r}; it reads unknown words as <unk>, "
                          "so no image is said to match it", LabelWarning, stacklevel=2)

    def probability(self, image_vectors: np.ndarray) -> np.ndarray:
        """(N,) probabilities that each image shows the text."""
        vectors = np.asarray(image_vectors, np.float32)
        if len(vectors) == 0 or not self.readable:
            return np.zeros(len(vectors))
        scale = self.encoder.logit_scale
        logits = (vectors @ self.text_vector).astype(np.float64)[:, None] * scale
        best, _ = self.reference.best_for_labels(self.encoder, vectors, self.kept)
        fits = self.detector.probability(logits, best.astype(np.float64) * scale)[:, 0]
        outside = self.open_set.probability(vectors)
        return fits if outside is None else fits * (1.0 - outside)
