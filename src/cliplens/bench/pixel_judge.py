"""A judge of dreams that does not use the model: plain image statistics, as a person would check the picture.

For a prompt such as "a red circle" it asks three questions of the image:

- **colour**: does red dominate the image's named colours (hue, saturation and value, the demo palette's six
  hues) and cover at least ``MIN_SHARE`` of the pixels, about what one small rendered shape covers?
- **one object**: does red gather in one blob (its largest 8-connected component, after a small opening
  that removes speckle, holds at least ``ONE_OBJECT`` of the red pixels and covers ``MIN_SHARE`` of the
  image) rather than in a texture of specks?
- **shape**: what does that blob look like? Its solidity (area over convex hull), the fill of its
  bounding box and the corners of its radial signature (peaks of the distance from its centre to its
  outline, around the centre) name it circle, square, triangle, star or cross.

The judge is itself checked against the shapes the demo data renders (:func:`judge_rendered`), whose
colour and shape are known.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

#: Hue ranges in degrees of the demo palette's colours (red wraps around 0).
HUES = {"red": ((345, 360), (0, 15)), "orange": ((15, 40),), "yellow": ((40, 70),), "green": ((75, 170),),
        "blue": ((195, 255),), "purple": ((255, 330),)}
MIN_SATURATION, MIN_VALUE = 0.35, 0.25
MIN_SHARE = 0.08
ONE_OBJECT = 0.6
SHAPES = ("circle", "square", "triangle", "star", "cross")


@dataclass(frozen=True)
class PixelVerdict:
    """What the statistics say about one image and its prompt's colour and shape."""

    colour: str
    shape: str
    colour_share: float  # of all pixels
    dominant_colour: str  # the named colour covering most pixels ("" when none is named)
    colour_dominates: bool
    blob_share: float  # the largest blob's part of the colour's pixels
    one_object: bool
    seen_shape: str  # what the largest blob looks like ("" without a blob)
    right_shape: bool

    @property
    def recognisable(self) -> bool:
        """The named colour dominates and forms one object."""
        return self.colour_dominates and self.one_object

    def to_dict(self) -> dict:
        return {**asdict(self), "recognisable": self.recognisable}


def colour_names(image: Image.Image) -> np.ndarray:
    """Each pixel's colour name index into ``HUES`` (-1: unnamed: grey, dark, pale or between hues)."""
    hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.float32) / 255.0
    hue, saturation, value = hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]
    names = np.full(hue.shape, -1, dtype=np.int8)
    chromatic = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)
    for index, ranges in enumerate(HUES.values()):
        inside = np.zeros(hue.shape, dtype=bool)
        for low, high in ranges:
            inside |= (hue >= low) & (hue < high)
        names[chromatic & inside] = index
    return names


def largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``mask`` after a 3×3 opening (speckle removed), as a mask."""
    from scipy import ndimage

    opened = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool)) if mask.sum() > 0 else mask
    labels, count = ndimage.label(opened, structure=np.ones((3, 3), bool))
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def _corners(blob: np.ndarray, bins: int = 72) -> int:
    """Peaks of the radial signature: the farthest outline point at each angle round the blob's centre,
    smoothed; a peak must stand 8% of the mean radius above the valleys around it (scipy's prominence)."""
    from scipy import ndimage
    from scipy.signal import find_peaks

    outline = blob & ~ndimage.binary_erosion(blob)
    ys, xs = np.nonzero(outline)
    cy, cx = np.nonzero(blob)
    centre_y, centre_x = cy.mean(), cx.mean()
    angles = np.arctan2(ys - centre_y, xs - centre_x)
    radii = np.hypot(ys - centre_y, xs - centre_x)
    slots = ((angles + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    signature = np.zeros(bins)
    np.maximum.at(signature, slots, radii)
    for i in np.flatnonzero(signature == 0):  # angles no outline pixel fell in: their neighbours' mean
        signature[i] = (signature[i - 1] + signature[(i + 1) % bins]) / 2
    smooth = ndimage.uniform_filter1d(signature, 3, mode="wrap")
    peaks, _ = find_peaks(np.tile(smooth, 3), prominence=0.08 * smooth.mean(), distance=max(2, bins // 24))
    return int(((peaks >= bins) & (peaks < 2 * bins)).sum())


def blob_shape(blob: np.ndarray) -> str:
    """Name the shape of a blob from its solidity, its bounding box's fill and its corners."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(blob)
    if len(ys) < 12:
        return ""
    area = float(len(ys))
    points = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (0, 1) for dx in (0, 1)])
    try:
        solidity = area / ConvexHull(points).volume
    except QhullError:
        return ""
    fill = area / ((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1))
    corners = _corners(blob)
    if solidity < 0.8:  # a star is hollower (solidity about 0.57, a cross 0.72) and fills less of its box
        return "star" if solidity < 0.65 or fill < 0.47 else "cross"
    if corners <= 1 or (corners >= 5 and solidity > 0.9):
        return "circle"
    if corners == 3:
        return "triangle"
    if corners == 4:
        return "square" if fill > 0.6 else "triangle"
    return "circle" if fill > 0.7 else "triangle"


def judge(image: Image.Image, colour: str, shape: str) -> PixelVerdict:
    """The statistics' verdict on an image meant to show one ``colour`` ``shape``."""
    if colour not in HUES:
        raise ValueError(f"no hue range for {colour!r}: use one of {', '.join(HUES)}")
    names = colour_names(image)
    total = names.size
    counts = np.bincount(names[names >= 0].ravel(), minlength=len(HUES))
    index = list(HUES).index(colour)
    share = counts[index] / total
    dominant = list(HUES)[int(np.argmax(counts))] if counts.max() > 0 else ""
    mask = names == index
    blob = largest_blob(mask)
    blob_pixels = int(blob.sum())
    blob_share = blob_pixels / max(1, int(mask.sum()))
    one_object = blob_share >= ONE_OBJECT and blob_pixels / total >= MIN_SHARE
    seen = blob_shape(blob) if blob_pixels else ""
    return PixelVerdict(colour, shape, float(share), dominant, bool(dominant == colour and share >= MIN_SHARE),
                        float(blob_share), bool(one_object), seen, seen == shape)


def judge_rendered(n: int = 300, seed: int = 0, size: int = 256) -> dict:
    """How often the judge reads right single shapes drawn plainly (a random demo colour, shape, background,
    radius 25–40% of the side, so that it covers the 8% the colour test asks for): its own check, on
    images a person calls recognisable."""
    import random

    from ..inputs.demo_data import BACKGROUNDS, COLOURS, render_shape

    rng = random.Random(seed)
    recognisable = right_shape = 0
    confusion: dict[str, dict[str, int]] = {s: {} for s in SHAPES}
    for _ in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        image = render_shape(shape, colour, rng.choice(list(BACKGROUNDS)), rng, size, rng.uniform(0.25, 0.4))
        verdict = judge(image, colour, shape)
        recognisable += verdict.recognisable
        right_shape += verdict.right_shape
        confusion[shape][verdict.seen_shape] = confusion[shape].get(verdict.seen_shape, 0) + 1
    return {"images": n, "recognisable": recognisable / n, "right_shape": right_shape / n, "confusion": confusion}
