"""Captions for language models, built from label banks (the Socratic Models idea).

A :class:`Captioner` embeds its banks once (from the disk cache after the first run), then for each
image: encodes it once, scores every bank label, and keeps per bank the top-k labels whose
calibrated probability of fitting clears the bank's threshold. That probability is the
none-of-these detector of :mod:`cliplens.classify`, which compares a label with the image's best
reference caption, so a bank where nothing fits contributes nothing instead of its least bad label.

Each kept label also faces the typographic guard: when a prompt describing the label *written* in
the image ("the word {}", "a sign that says {}") singles it out more than the label itself does
(see :func:`typographic_suspects`), the label probably comes from text in the image, not from what
it shows; it is marked and left out of the sentence. ``refine`` then swaps labels greedily, within a time budget, while the whole caption's
similarity to the image rises.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import ImageLoadError, UsageError
from ..inputs.images import ImageSource, load_image, source_name
from ..inputs.ocr import text_cover
from ..inputs.wordlists import imagenet_classes
from ..models import Encoder, TextTruncatedWarning, as_encoder
from ..scores.calibration import Calibration, FitDetector, resolve_calibration
from ..scores.probabilities import sigmoid
from ..text.bank_vectors import TYPOGRAPHIC_PROMPTS, BankVectors, bank_vectors
from ..text.banks import LabelBank, resolve_banks
from ..text.open_set import OpenSetEvidence
from ..text.reference import shared_vocabulary
from ..vectors.batches import iter_encoded_batches

CANDIDATES = 16  # labels per bank whose fit is judged (the best by similarity); more only cost time
REFINE_POOL = 6  # labels per bank the refiner may swap in
LLM_PREFIX = "Image Attached"


@dataclass(frozen=True)
class CaptionLabel:
    """A label a bank kept: its calibrated probability of fitting, and whether it looks read, not seen."""

    label: str
    score: float
    typographic_suspect: bool = False
    similarity: float = 0.0
    log_odds: float = 0.0  # the fit detector's, before the bank's calibration
    margin: float = 0.0  # similarity over the best other candidate of its bank (negative when another is better)


@dataclass(frozen=True)
class Caption:
    """The caption of one image and, per bank, the labels behind it (suspects included, marked)."""

    image: str
    caption: str
    banks: dict[str, list[CaptionLabel]]
    out_of_distribution: float | None = None  # P(the image lies outside the calibrated world); None without it
    text_found: list[str] | None = None  # with read_text or ignore_text: the text the OCR engine read
    text_covered: bool = False  # with ignore_text: that text was covered before the image was encoded

    def _repr_html_(self) -> str:
        """The sentence, and each bank's labels as chips (how a notebook shows a caption)."""
        from html import escape

        banks = "".join(
            f"<div><b>{escape(name)}</b>: " + ("".join(
                f'<span style="display:inline-block;margin:2px;padding:1px 6px;border-radius:8px;background:'
                f'{"#f4d6d6" if c.typographic_suspect else "#dde8f5"}">{escape(c.label)} {c.score:.0%}'
                f'{" (text?)" if c.typographic_suspect else ""}</span>' for c in labels) or "nothing fits") + "</div>"
            for name, labels in self.banks.items())
        return (f'<div class="cliplens-caption"><p>{escape(self.caption) or "(no caption)"}</p>{banks}</div>')

    def llm(self) -> str:
        """The line to put in a chat: ``[Image Attached: Image with a sheep in it. This is a photo.]``."""
        return f"[{LLM_PREFIX}: {self.caption}]" if self.caption else f"[{LLM_PREFIX}]"

    def to_dict(self) -> dict:
        """The JSON form (``--json`` and the HTTP API): ``{"image", "caption", "llm", "out_of_distribution",
        "banks": {NAME: [{"label", "score", "typographic_suspect"}]}}``."""
        data = {"image": self.image, "caption": self.caption, "llm": self.llm(),
                "out_of_distribution": self.out_of_distribution,
                "banks": {name: [{"label": c.label, "score": c.score, "typographic_suspect": c.typographic_suspect}
                                 for c in labels] for name, labels in self.banks.items()}}
        if self.text_found is not None:
            data["text_found"] = list(self.text_found)
            data["text_covered"] = len(self.text_found) if self.text_covered else 0
        return data


_NOT_EVIDENCE = frozenset({"the", "and", "with", "for", "from", "photo", "image", "picture", "this", "that"})


def written_in(label: str, texts: Sequence[str]) -> bool:
    """Whether ``label`` (or one of its words of three letters or more) is written in ``texts``, as an OCR engine
    read them (case and spaces ignored: it reads "green triangle" as "greentriangle")."""
    read = ["".join(ch for ch in t.lower() if ch.isalnum()) for t in texts]
    words = ["".join(ch for ch in w.lower() if ch.isalnum()) for w in label.split()]
    whole = "".join(words)
    words = [w for w in words if len(w) >= 3 and w not in _NOT_EVIDENCE]
    return any(whole and whole in r or any(w in r for w in words) for r in read if r)


def bank_margins(sims: np.ndarray) -> np.ndarray:
    """Each label's similarity less the best similarity among the bank's other candidates."""
    sims = np.asarray(sims, np.float64)
    if len(sims) < 2:
        return np.zeros(len(sims))
    top2 = np.sort(sims)[-2:]
    return sims - np.where(sims >= top2[1], top2[0], top2[1])


def typographic_suspects(visual: np.ndarray, written: np.ndarray) -> np.ndarray:
    """Which labels match better as written words than as things shown.

    ``visual``: each candidate label's similarity; ``written``: its best similarity as written text
    ("the word {}"). Any image with lettering matches every written-word prompt somewhat, so each is
    read relative to the other candidates (their median): a label is suspect when the image says
    *this* word more clearly than it shows *this* thing.
    """
    visual, written = np.asarray(visual, np.float64), np.asarray(written, np.float64)
    if len(visual) < 2:
        return written > visual
    reads = written - np.median(written)
    shows = visual - np.median(visual)
    return (reads > 0) & (reads > shows)


class Captioner:
    """Captions images from label banks; bank texts are embedded once (and cached on disk).

    ``banks``: names of built-in banks, ``NAME=FILE``, bank files, folders of them or
    :class:`LabelBank` objects (None: the model's default banks). ``keep_typographic`` keeps labels
    the guard marks in the sentence. ``read_text`` gives the guard an OCR engine's evidence (the ``ocr``
    extra): a label written in the image is a suspect whatever the model reads; ``ignore_text`` also
    covers that text before the image is encoded. ``calibration``: as for :class:`cliplens.Classifier` (the one
    shipped beside the model by default), whose detector judges whether a label fits.
    ``texts_encoded`` counts the texts this captioner had to encode (0 when everything was cached).
    """

    def __init__(self, model: Encoder | str | None = None, banks: Sequence[str | LabelBank] | None = None, *,
                 device: str | None = None, keep_typographic: bool = False,
                 calibration: Calibration | str | os.PathLike | bool | None = None,
                 typographic_prompts: Sequence[str] = TYPOGRAPHIC_PROMPTS,
                 on_progress: Callable[[str, int, int], None] | None = None, read_text: bool = False,
                 ignore_text: bool = False):
        self.encoder = as_encoder(model, device)
        self.ignore_text = ignore_text
        self.text_cover = text_cover("ignore_text" if ignore_text else "read_text") if read_text or ignore_text \
            else None
        self.banks = resolve_banks(banks, self.encoder.info.path)
        self.keep_typographic = keep_typographic
        calibration = resolve_calibration(calibration, self.encoder)
        self.detector = calibration.detector if calibration else FitDetector()
        self.reference = shared_vocabulary(tuple(calibration.reference if calibration else imagenet_classes()))
        encoded_before = self.reference.encoded_texts
        self._reference_vectors = self.reference.for_model(self.encoder)[1]
        self.vectors: list[BankVectors] = []
        for bank in self.banks:
            report = (lambda done, total, name=bank.name: on_progress(name, done, total)) if on_progress else None
            self.vectors.append(bank_vectors(self.encoder, bank, typographic=typographic_prompts, on_progress=report))
        self.texts_encoded = self.reference.encoded_texts - encoded_before + sum(v.encoded for v in self.vectors)
        self._all = np.concatenate([np.asarray(v.vectors) for v in self.vectors]) if self.vectors else None
        bounds = np.cumsum([0] + [len(v.labels) for v in self.vectors])
        self._slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self._excluded: dict[str, np.ndarray] = {}
        self.open_set = OpenSetEvidence(self.encoder, calibration, self.reference)

    @property
    def unreadable(self) -> dict[str, tuple[str, ...]]:
        """Per bank, the labels this model cannot read (left out)."""
        return {v.bank.name: v.unreadable for v in self.vectors if v.unreadable}

    # --- scoring -------------------------------------------------------------------------------

    def _reference_for(self, label: str, reference_sims: np.ndarray, best: float) -> float:
        excluded = self._excluded.get(label)
        if excluded is None:
            excluded = self._excluded[label] = self.reference.related(self.encoder, label)
        if len(excluded) == 0:
            return best
        masked = reference_sims.copy()
        masked[excluded] = -np.inf
        return float(masked.max()) if np.isfinite(masked).any() else -1.0

    def _judge(self, vector: np.ndarray, sims: np.ndarray, reference_sims: np.ndarray, best: float,
               index: int, count: int, inside: float = 1.0) -> list[CaptionLabel]:
        """``inside``: the probability that the image lies inside the calibrated world; a label fits only then."""
        held = self.vectors[index]
        n = min(len(sims), count)
        candidates = np.argpartition(-sims, n - 1)[:n] if n < len(sims) else np.arange(len(sims))
        scale = self.encoder.logit_scale
        reference = np.array([self._reference_for(held.labels[c], reference_sims, best) for c in candidates])
        log_odds = self.detector.log_odds(scale * sims[candidates].astype(np.float64), scale * reference)
        margins = bank_margins(sims[candidates])
        bias, odds_weight, margin_weight = held.bank.calibration
        fit = inside * sigmoid(bias + odds_weight * log_odds + margin_weight * margins)
        suspect = typographic_suspects(sims[candidates],
                                       np.einsum("kwd,d->kw", np.asarray(held.written[candidates]), vector).max(axis=1))
        judged = [CaptionLabel(held.labels[k], float(p), bool(t), float(sims[k]), float(z), float(m))
                  for k, p, t, z, m in zip(candidates, fit, suspect, log_odds, margins)]
        return sorted(judged, key=lambda c: (-c.score, -c.similarity))

    def judge(self, vector: np.ndarray, bank: str, count: int = CANDIDATES) -> list[CaptionLabel]:
        """The bank's ``count`` labels most similar to an embedded image, each with its probability of
        fitting and the guard's verdict, most probable first (before the threshold and top-k)."""
        names = [b.name for b in self.banks]
        if bank not in names:
            raise UsageError(f"no bank {bank!r} here (have {', '.join(names)})", parameter="bank")
        index = names.index(bank)
        vector = np.asarray(vector, np.float32).reshape(-1)
        reference_sims = self._reference_vectors @ vector
        sims = self._all[self._slices[index]] @ vector
        if len(sims) == 0:
            return []
        return self._judge(vector, sims, reference_sims, float(reference_sims.max()), index, count,
                           1.0 - self._outside(vector))

    def _outside(self, vector: np.ndarray) -> float:
        """P(the embedded image lies outside the calibrated world): a bank whose best label is out of
        distribution contributes nothing. 0 without the evidence."""
        probability = self.open_set.probability(vector[None, :])
        return 0.0 if probability is None else float(probability[0])

    def _choose(self, bank: LabelBank, judged: list[CaptionLabel]) -> list[CaptionLabel]:
        return [c for c in judged if c.score >= bank.threshold][: bank.top_k]

    def _sentence_labels(self, kept: list[CaptionLabel]) -> list[str]:
        return [c.label for c in kept if self.keep_typographic or not c.typographic_suspect]

    def compose(self, chosen: dict[str, list[CaptionLabel]]) -> str:
        """The caption's sentences, one per bank that kept a label, in bank order."""
        sentences = [bank.sentence(self._sentence_labels(chosen.get(bank.name, []))) for bank in self.banks]
        return " ".join(s for s in sentences if s)

    def caption_vector(self, vector: np.ndarray, name: str = "", *, refine: bool = False,
                       refine_seconds: float = 2.0, written: Sequence[str] | None = None,
                       covered: bool | None = None) -> Caption:
        """The caption of one already-embedded image (an L2-normalised vector). ``written``: the text an OCR
        engine read in the image; a label written there is a typographic suspect whatever the model reads;
        ``covered``: whether that text was covered before encoding (default: this captioner's ignore_text)."""
        vector = np.asarray(vector, np.float32).reshape(-1)
        reference_sims = self._reference_vectors @ vector
        best = float(reference_sims.max())
        sims_all = self._all @ vector if self._all is not None else np.zeros(0, np.float32)
        outside = self._outside(vector)
        chosen, pools = {}, {}
        for index, (bank, part) in enumerate(zip(self.banks, self._slices)):
            sims = sims_all[part]
            if len(sims) == 0:
                chosen[bank.name], pools[bank.name] = [], []
                continue
            judged = self._judge(vector, sims, reference_sims, best, index, max(CANDIDATES, 4 * bank.top_k),
                                 1.0 - outside)
            if written:
                judged = [replace(c, typographic_suspect=True) if written_in(c.label, written) else c for c in judged]
            chosen[bank.name] = self._choose(bank, judged)
            pools[bank.name] = [c for c in judged[:REFINE_POOL] if not c.typographic_suspect]
        if refine:
            chosen = self._refine(vector, chosen, pools, time.monotonic() + refine_seconds)
        return Caption(name, self.compose(chosen), chosen, outside if self.open_set.available else None,
                       None if written is None else list(written), self.ignore_text if covered is None else covered)

    # --- refinement ----------------------------------------------------------------------------

    def _caption_similarities(self, texts: list[str], vector: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TextTruncatedWarning)
            return self.encoder.encode_texts(texts) @ vector

    def _refine(self, vector: np.ndarray, chosen: dict[str, list[CaptionLabel]],
                pools: dict[str, list[CaptionLabel]], deadline: float) -> dict[str, list[CaptionLabel]]:
        """Greedy single edits (swap, add or drop one label) while the whole caption's similarity rises."""
        current = {name: list(labels) for name, labels in chosen.items()}
        text = self.compose(current)
        if not text:
            return current
        score = float(self._caption_similarities([text], vector)[0])
        while time.monotonic() < deadline:
            variants = []
            for bank in self.banks:
                labels, pool = current[bank.name], pools[bank.name]
                spare = [c for c in pool if c.label not in {k.label for k in labels}]
                for i in range(len(labels)):
                    variants.append({**current, bank.name: labels[:i] + labels[i + 1:]})
                    variants.extend({**current, bank.name: labels[:i] + [alt] + labels[i + 1:]} for alt in spare)
                if len(labels) < bank.top_k:
                    variants.extend({**current, bank.name: labels + [alt]} for alt in spare)
            texts = [self.compose(v) for v in variants]
            keep = [i for i, t in enumerate(texts) if t and t != text]
            if not keep:
                break
            sims = self._caption_similarities([texts[i] for i in keep], vector)
            best = int(np.argmax(sims))
            if sims[best] <= score:
                break
            score, current, text = float(sims[best]), variants[keep[best]], texts[keep[best]]
        return current

    # --- images --------------------------------------------------------------------------------

    def caption(self, image: ImageSource, *, refine: bool = False, refine_seconds: float = 2.0) -> Caption:
        """The caption of one image (path, bytes or PIL image); a bad image raises :class:`ImageLoadError`."""
        source = image
        if self.text_cover is not None:
            image = load_image(image, draft_size=self.encoder.draft_size)
            if self.ignore_text:
                image = self.text_cover(source, image)
            else:  # the evidence only: the image is encoded as it is
                self.text_cover.read(source, image)
        vector = self.encoder.encode_images([image])[0]
        return self.caption_vector(vector, source_name(source), refine=refine, refine_seconds=refine_seconds,
                                   written=self._written(source))

    def _written(self, source) -> list[str] | None:
        if self.text_cover is None:
            return None
        return [r.text for r in self.text_cover.covered(source)]

    def caption_many(self, images: Sequence[ImageSource], *, refine: bool = False, refine_seconds: float = 2.0,
                     batch_size: int | None = None, workers: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None) -> Iterator[Caption | ImageLoadError]:
        """Captions in input order, yielding a :class:`Caption` or the :class:`ImageLoadError` of each image."""
        images = list(images)
        transform = None
        if self.text_cover is not None:
            transform = self.text_cover if self.ignore_text else self.text_cover.read
        for batch in iter_encoded_batches(images, self.encoder, batch_size=batch_size, workers=workers,
                                          on_progress=on_progress, transform=transform):
            for i, vector in batch:
                yield vector if isinstance(vector, ImageLoadError) else self.caption_vector(
                    vector, source_name(images[i]), refine=refine, refine_seconds=refine_seconds,
                    written=self._written(images[i]))


def caption(image: ImageSource, model: Encoder | str | None = None, banks: Sequence[str | LabelBank] | None = None,
            *, refine: bool = False, keep_typographic: bool = False, device: str | None = None) -> Caption:
    """Caption one image from label banks; use :class:`Captioner` to caption many with the same banks."""
    return Captioner(model, banks, device=device, keep_typographic=keep_typographic).caption(image, refine=refine)
