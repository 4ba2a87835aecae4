"""Images as optimisable parameters, and the random views of them that CLIP judges, for ``cliplens dream``.

Two parameterisations (Olah et al., "Feature Visualization", Distill 2017, and Lucid's ``param.image``):

- ``fft``: the image is the inverse real FFT of a spectrum whose coefficients are scaled by 1/frequency,
  so that equal steps on every coefficient give an image with natural-image statistics rather than
  high-frequency noise; its three channels live in a decorrelated colour basis (the square root of
  ImageNet's colour correlation) and a sigmoid maps them to [0, 1].
- ``pixel``: one logit per pixel and channel, through a sigmoid.

Both can start from a photo: :meth:`ImageParam.from_image` inverts the map, so step 0 reproduces it.

Without a photo, the masked recipes add an opacity mask (:class:`FourierAlpha`, a one-channel spectrum), and
the ``object`` recipe draws what is under it in one colour (:class:`LayerColour`: three colour logits and a
smooth one-channel shade bounded to a fraction of a logit), so that it reads as one coloured thing.

The views (random square crops at random scales, flips and noise) are resampled with small
interpolation matrices (a triangle filter, widened when a crop is shrunk, as Pillow's bilinear
resize does), so a view is two matrix products: cheap, anti-aliased, differentiable, and free of the
scattered additions that make interpolation gradients nondeterministic on GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PARAMS = ("fft", "pixel")

#: Lucid's ``color_correlation_svd_sqrt``: the square root of ImageNet's RGB correlation matrix.
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
#: Lucid divides the image the inverse FFT gives by this before the colour map.
FFT_IMAGE_DIVISOR = 4.0
#: A photo's pixels are clipped to [EDGE, 1 − EDGE] before the sigmoid is inverted (logit(0) is infinite,
#: and saturated pixels would barely move): 2.5/255 at most, less than one quantisation step in 100.
EDGE = 0.01


def color_matrix():
    """The colour map, normalised by its largest column norm as Lucid does (a torch (3, 3) tensor)."""
    import torch

    matrix = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=torch.float64)
    return (matrix / matrix.norm(dim=0).max()).float()


class ImageParam:
    """An image of ``height`` × ``width`` as a leaf tensor ``param`` that an optimiser can move.

    :meth:`rgb` gives the image, (1, 3, H, W) in [0, 1], differentiable in ``param``.
    """

    kind = ""

    def __init__(self, param, height: int, width: int):
        self.param = param
        self.height = height
        self.width = width

    @classmethod
    def random(cls, height: int, width: int, generator, device: str = "cpu", sd: float = 0.01) -> "ImageParam":
        raise NotImplementedError

    @classmethod
    def from_image(cls, pixels, device: str = "cpu") -> "ImageParam":
        """Parameters whose :meth:`rgb` is ``pixels`` (a (1, 3, H, W) float tensor in [0, 1], clipped to
        [EDGE, 1 − EDGE])."""
        raise NotImplementedError

    def rgb(self):
        raise NotImplementedError


class PixelParam(ImageParam):
    """One logit per pixel and channel; the image is their sigmoid."""

    kind = "pixel"

    @classmethod
    def random(cls, height, width, generator, device="cpu", sd=0.01):
        import torch

        logits = torch.randn((1, 3, height, width), generator=generator) * sd
        return cls(logits.to(device).requires_grad_(True), height, width)

    @classmethod
    def from_image(cls, pixels, device="cpu"):
        import torch

        logits = torch.logit(pixels.clamp(EDGE, 1 - EDGE))
        return cls(logits.to(device).requires_grad_(True), pixels.shape[-2], pixels.shape[-1])

    def rgb(self):
        return self.param.sigmoid()


class FourierParam(ImageParam):
    """A spectrum (real and imaginary parts) scaled by 1/frequency, in a decorrelated colour basis."""

    kind = "fft"

    def __init__(self, param, height, width, decay: float = 1.0):
        import torch

        super().__init__(param, height, width)
        device = param.device
        fy = torch.fft.fftfreq(height, device=device)[:, None]
        fx = torch.fft.rfftfreq(width, device=device)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        self.scale = (1.0 / freqs.clamp(min=1.0 / max(height, width)) ** decay)[None, None, :, :, None]
        self.colors = color_matrix().to(device)

    @staticmethod
    def shape(height: int, width: int) -> tuple[int, ...]:
        return (1, 3, height, width // 2 + 1, 2)

    @classmethod
    def random(cls, height, width, generator, device="cpu", sd=0.01, decay: float = 1.0):
        import torch

        spectrum = torch.randn(cls.shape(height, width), generator=generator) * sd
        return cls(spectrum.to(device).requires_grad_(True), height, width, decay)

    @classmethod
    def from_image(cls, pixels, device="cpu", decay: float = 1.0):
        import torch

        height, width = pixels.shape[-2:]
        this = cls(torch.zeros(cls.shape(height, width), device=device).requires_grad_(True), height, width, decay)
        logits = torch.logit(pixels.to(device).clamp(EDGE, 1 - EDGE))
        decorrelated = torch.einsum("ij,njhw->nihw", torch.linalg.inv(this.colors), logits)
        spectrum = torch.fft.rfft2(decorrelated * FFT_IMAGE_DIVISOR, norm="ortho")
        with torch.no_grad():
            this.param.copy_(torch.view_as_real(spectrum) / this.scale)
        return this

    def logits(self):
        """The image before the sigmoid: (1, 3, H, W)."""
        import torch

        spectrum = torch.view_as_complex((self.param * self.scale).contiguous())
        image = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho") / FFT_IMAGE_DIVISOR
        return torch.einsum("ij,njhw->nihw", self.colors, image)

    def rgb(self):
        return self.logits().sigmoid()


class LayerColour:
    """The colour of a drawn layer: one colour for all of it (three logits) plus a shading, a smooth Fourier
    image bounded to ± ``shading`` logits, so that light and shade can vary over it but not its hue's
    mixture: what is drawn reads as one coloured thing. ``shading`` 0: one flat colour."""

    def __init__(self, base, shade: "FourierAlpha", shading: float):
        self.base, self.shade, self.shading = base, shade, shading
        self.height, self.width = shade.height, shade.width

    @classmethod
    def random(cls, height: int, width: int, generator, device: str = "cpu", shading: float = 1.0,
               decay: float = 2.0, sd: float = 0.01) -> "LayerColour":
        import torch

        base = (torch.randn((1, 3, 1, 1), generator=generator) * sd).to(device).requires_grad_(True)
        return cls(base, FourierAlpha.random(height, width, generator, device, sd=sd, decay=decay), shading)

    @property
    def leaves(self) -> list:
        return [self.base, self.shade.param] if self.shading else [self.base]  # shading 0: one flat colour

    def rgb(self):
        if not self.shading:
            return self.base.sigmoid().expand(1, 3, self.height, self.width)
        return (self.base + self.shading * self.shade.logits().tanh()).sigmoid()  # one shade for all channels


class FourierAlpha:
    """An opacity mask parameterised as a one-channel spectrum scaled by 1/frequency**decay, through a sigmoid
    (Lucid's transparent images): the image is composited over a new plain background in every view, so
    only what is drawn (opaque) can carry the prompt, as an object on a ground."""

    def __init__(self, param, height: int, width: int, decay: float = 1.0):
        import torch

        self.param, self.height, self.width = param, height, width
        fy = torch.fft.fftfreq(height, device=param.device)[:, None]
        fx = torch.fft.rfftfreq(width, device=param.device)[None, :]
        freqs = torch.sqrt(fx * fx + fy * fy)
        self.scale = (1.0 / freqs.clamp(min=1.0 / max(height, width)) ** decay)[None, None, :, :, None]

    @classmethod
    def random(cls, height: int, width: int, generator, device: str = "cpu", sd: float = 0.01,
               decay: float = 1.0) -> "FourierAlpha":
        import torch

        spectrum = torch.randn((1, 1, height, width // 2 + 1, 2), generator=generator) * sd
        return cls(spectrum.to(device).requires_grad_(True), height, width, decay)

    def logits(self):
        """The mask before the sigmoid, (1, 1, H, W)."""
        import torch

        spectrum = torch.view_as_complex((self.param * self.scale).contiguous())
        return torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho") / FFT_IMAGE_DIVISOR

    def alpha(self):
        """The mask, (1, 1, H, W) in [0, 1]."""
        return self.logits().sigmoid()


def make_param(kind: str, height: int, width: int, generator, device: str = "cpu", init=None,
               decay: float = 1.0) -> ImageParam:
    """A random image of ``kind`` (``fft`` or ``pixel``), or one that starts as ``init`` ((1, 3, H, W) in [0, 1]);
    ``decay``: the Fourier spectrum's 1/frequency**decay scaling (larger: smoother, larger shapes)."""
    if kind == "pixel":
        return PixelParam.from_image(init, device) if init is not None else PixelParam.random(height, width, generator,
                                                                                             device)
    if init is not None:
        return FourierParam.from_image(init, device, decay=decay)
    return FourierParam.random(height, width, generator, device, decay=decay)


def pil_to_tensor(image: Image.Image):
    """An RGB PIL image as a (1, 3, H, W) float32 tensor in [0, 1]."""
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def tensor_to_pil(pixels) -> Image.Image:
    """A (1, 3, H, W) or (3, H, W) tensor in [0, 1] as an 8-bit RGB PIL image."""
    array = pixels.detach().float().cpu().reshape(-1, *pixels.shape[-2:]).numpy()
    return Image.fromarray(np.round(array.clip(0, 1) * 255).astype(np.uint8).transpose(1, 2, 0), "RGB")


# --- views ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """How the views of each step are drawn.

    Each view is a square crop whose side is a uniform fraction in [``min_scale``, ``max_scale``] of the
    image's shorter side, at a uniform position, resized to the model's input, mirrored with
    probability ``flip``, its colours jittered (each channel scaled by 1 ± ``jitter`` and shifted by
    ± ``jitter``/2, uniformly), plus Gaussian noise of standard deviation ``noise`` (in [0, 1] pixel units).
    """

    cutouts: int = 8
    min_scale: float = 0.8
    max_scale: float = 1.0
    flip: float = 0.5
    noise: float = 0.02
    jitter: float = 0.0
    desaturate: float = 0.0


def resample_matrix(start: float, length: float, out: int, size: int, flip: bool = False,
                    pad: bool = False) -> np.ndarray:
    """The (out, size) matrix that resamples source pixels [start, start + length) of a row of ``size``
    pixels to ``out`` pixels: a triangle filter, widened by the shrink factor when shrinking (as
    Pillow's bilinear resize), rows normalised; ``flip`` mirrors the output. With ``pad``, a window
    reaching past the row's ends sees zeros there (transparent, for a masked image) instead of the
    edge pixels stretched."""
    step = length / out
    support = max(1.0, step)
    centres = start + (np.arange(out) + 0.5) * step - 0.5
    low, high = (int(np.floor(min(0.0, start) - support)), int(np.ceil(max(size, start + length) + support))) \
        if pad else (0, size)
    source = np.arange(low, high)
    weights = np.clip(1.0 - np.abs(source[None, :] - centres[:, None]) / support, 0.0, None)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    weights = weights[:, -low : size - low]
    return weights[::-1].copy() if flip else weights


def draw_views(height: int, width: int, out: tuple[int, int], augment: Augment, generator, pad: bool = False):
    """Random view matrices for one step: (rows (N, out_h, H), cols (N, out_w, W)) as float32 tensors.

    A scale above 1 views more than the image (zoomed out): with ``pad`` the margin is transparent, else
    the edges are stretched. Every random number comes from ``generator`` (on the CPU), so a seed fixes
    the views on any device.
    """
    import torch

    n = augment.cutouts
    draws = torch.rand((n, 4), generator=generator, dtype=torch.float64).numpy()
    short = min(height, width)
    rows, cols = [], []
    for fraction, y, x, flip in draws:
        side = short * (augment.min_scale + (augment.max_scale - augment.min_scale) * fraction)
        top, left = y * (height - side), x * (width - side)
        rows.append(resample_matrix(top, side, out[0], height, pad=pad))
        cols.append(resample_matrix(left, side, out[1], width, flip=bool(flip < augment.flip), pad=pad))
    return (torch.from_numpy(np.stack(rows).astype(np.float32)), torch.from_numpy(np.stack(cols).astype(np.float32)))


def resample_views(image, rows, cols):
    """Crops of ``image`` (1, C, H, W) resized and flipped by the view matrices: (N, C, h, w)."""
    import torch

    return torch.einsum("nah,chw,nbw->ncab", rows, image[0], cols)


def perturb_views(views, noise: float, generator, jitter: float = 0.0, desaturate: float = 0.0):
    """Views with their colours jittered (per view and channel), each mixed towards its own grey by a random
    part of ``desaturate``, and Gaussian noise added."""
    import torch

    if desaturate > 0:
        n = views.shape[0]
        amount = (torch.rand((n, 1, 1, 1), generator=generator) * desaturate).to(views.device)
        views = views * (1 - amount) + views.mean(dim=1, keepdim=True) * amount
    if jitter > 0:
        n = views.shape[0]
        gains = 1 + (torch.rand((n, 3, 1, 1), generator=generator) * 2 - 1) * jitter
        shifts = (torch.rand((n, 3, 1, 1), generator=generator) - 0.5) * jitter
        views = views * gains.to(views.device) + shifts.to(views.device)
    if noise > 0:
        views = views + torch.randn(views.shape, generator=generator).to(views.device) * noise
    return views


def render_views(image, rows, cols, noise: float, generator, jitter: float = 0.0):
    """The views of ``image`` (1, 3, H, W): crops resized and flipped by the matrices, colours jittered, plus
    noise; (N, 3, h, w)."""
    return perturb_views(resample_views(image, rows, cols), noise, generator, jitter)


def total_variation(image) -> "object":
    """Mean absolute difference between neighbouring pixels (a smoothness penalty)."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dx + dy


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` (or one number for a square) → (width, height); raises ValueError naming what is wrong."""
    cleaned = text.strip().lower().replace("×", "x")
    parts = cleaned.split("x") if "x" in cleaned else [cleaned, cleaned]
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"{text!r} is not WIDTHxHEIGHT in pixels (e.g. 224x224)")
    width, height = (int(p) for p in parts)
    return width, height
