"""CLIP-guided image synthesis: an image that a CLIP-family model judges to fit a prompt.

The simplest of the CLIP-steered generators (CLIP+FFT) needs nothing but the model: an image is
parameterised (in Fourier space with decorrelated colours, or as plain pixels, see
:mod:`cliplens.dream.params`); each step renders a batch of random views of it (crops at random
scales and places, flips, noise), embeds them, and Adam follows the gradient of

    − mean cosine(view, prompt) + mean cosine(view, negatives) + tv_weight · TV(image)
    [+ init_weight · mean (image − start)²  when starting from a photo]
    [+ alpha · mean (opacity · edge cost)  with a mask]
    [+ AGAINST_WEIGHT · mean cross-entropy(prompt among prompt and ``against``) / logit scale]

The last term is class-conditional synthesis as a classifier does it (Santurkar et al. 2019 maximise the
class's log-probability): with ``against`` (the other labels, written as the prompt is), the image is drawn
to be told apart from them at the model's own temperature, not only to be near the prompt. A star must then
look like a star rather than like the blob that is as near "a red star" as it is "a red circle".

The ``robust`` guidance gives the image an opacity mask and shows each view over a plain grey of its own,
zoomed out past the image's edges: only what reads as the prompt on any plain ground is followed, so the
image becomes an object on a ground rather than the texture the model alone rewards. The ``object`` guidance
(the default) also draws it in one flat colour (:class:`~.params.LayerColour`), and washes each view out
towards grey by a random amount, so that only a clear colour keeps reading as the prompt's; its views are
zoomed out further, so the object fills more of the image. Followed through a robust model's gradients
(``demo-robust``, trained with ``cliplens train --adversarial``), that object takes the named shape.

What comes out shows what the model "thinks" the caption looks like. The same seed on the same device
gives the same image: every random number comes from one seeded ``torch.Generator``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from ..errors import UsageError
from ..files import atomic_path
from ..inputs.images import ImageSource, load_image, source_name
from ..models import Encoder, load_model
from .params import (PARAMS, Augment, FourierAlpha, LayerColour, draw_views, make_param, parse_size, perturb_views,
                     pil_to_tensor, render_views, resample_views, tensor_to_pil, total_variation)

DEFAULT_STEPS = 400
#: Adam's learning rate per parameterisation (Lucid's 0.05 for the Fourier one; logits need larger steps).
DEFAULT_LR = {"fft": 0.05, "pixel": 0.1}
#: The ground a masked image is shown on (near white, as the demo shapes' white backgrounds).
GROUND = 0.98
#: Without --size or --init, the image's side: at least this, or the model's input when that is larger.
DEFAULT_SIDE = 256


@dataclass(frozen=True)
class Guidance:
    """A recipe for the gradients an image follows: its views, smoothness and spectrum."""

    name: str
    augment: Augment
    tv_weight: float
    decay: float = 1.0  # the Fourier spectrum's 1/frequency**decay
    alpha: float = 0.0  # > 0: an opacity mask, composited over plain grounds in each view; its mean's weight
    shading: float | None = None  # with a mask: one colour, shaded by up to ± this many logits (0: flat)
    description: str = ""


GUIDANCE = {
    "plain": Guidance("plain", Augment(cutouts=8, min_scale=0.8, max_scale=1.0, flip=0.5, noise=0.02),
                      tv_weight=0.05, decay=1.0, alpha=0.0,
                      description="eight near-whole views a step, light noise: what CLIP+FFT does; the model's own "
                                  "gradients"),
    "robust": Guidance("robust", Augment(cutouts=16, min_scale=0.7, max_scale=1.2, flip=0.5, noise=0.05, jitter=0.05),
                       tv_weight=0.5, decay=1.5, alpha=0.5,
                       description="an opacity mask shown over a new plain grey in each of sixteen views (scales "
                                   "0.7-1.2, zoomed out past the edges), what is drawn costing more towards the "
                                   "edges, a smoother spectrum and more smoothness: one object on a plain ground"),
    "object": Guidance("object", Augment(cutouts=16, min_scale=1.2, max_scale=2.2, flip=0.5, noise=0.05, jitter=0.05,
                                         desaturate=0.6),
                       tv_weight=0.5, decay=1.5, alpha=0.5, shading=0.0,
                       description="what is drawn is one flat colour under an opacity mask, "
                                   "each of sixteen views shows it over a plain grey of its own, zoomed out to "
                                   "1.2-2.2 times the image and washed out towards grey by up to 60%: one object of "
                                   "one clear colour, large, on a plain ground; with a robust model (demo-robust), "
                                   "of the named shape"),
}
DEFAULT_GUIDANCE = "object"
#: The default recipe's views per step and smoothness weight.
DEFAULT_CUTOUTS = GUIDANCE[DEFAULT_GUIDANCE].augment.cutouts
DEFAULT_TV_WEIGHT = GUIDANCE[DEFAULT_GUIDANCE].tv_weight
DEFAULT_INIT_WEIGHT = 10.0
#: The weight of the prompt's cross-entropy among the ``against`` texts (divided by the model's logit scale, so
#: in cosine units); 3 kept the pixels' verdicts and put the prompt first among the 30 demo labels most often.
AGAINST_WEIGHT = 3.0
FRAMES = 40  # frames of a run, about, when on_frame is given without frame_every
#: Sides (pixels) an image may have.
MIN_SIDE, MAX_SIDE = 8, 4096
#: Without --size, a start image keeps its aspect ratio, shrunk (never enlarged) to this longer side.
INIT_MAX_SIDE = 512

StepFn = Callable[[int, int, float], None]
FrameFn = Callable[[int, Image.Image], None]


@dataclass
class Dream:
    """A generated image and how it came about.

    ``similarities`` is the curve: at each step, the mean cosine of that step's augmented views with the
    prompt (what was optimised). ``similarity`` is the cosine of the finished 8-bit image itself,
    preprocessed as the model always sees images, and ``start_similarity`` the same for the image the
    run started from (the start photo, or the initial noise).
    """

    image: Image.Image
    prompt: str
    negative: tuple[str, ...]
    similarities: list[float]
    similarity: float
    start_similarity: float
    steps: int
    seed: int
    size: tuple[int, int]  # (width, height)
    param: str
    model: str
    device: str
    seconds: float
    init: str | None = None
    settings: dict = field(default_factory=dict)
    against: tuple[str, ...] = ()

    def save(self, path) -> None:
        """Write the image (format from the file name, PNG when it has none); its folder must exist."""
        with atomic_path(path) as tmp:
            self.image.save(tmp, format=Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"))

    def to_dict(self) -> dict:
        """The JSON form: everything but the image."""
        return {"prompt": self.prompt, "negative": list(self.negative), "against": list(self.against),
                "model": self.model, "device": self.device,
                "param": self.param, "size": list(self.size), "steps": self.steps, "seed": self.seed,
                "init": self.init, "similarity": self.similarity, "start_similarity": self.start_similarity,
                "seconds": round(self.seconds, 3), "settings": dict(self.settings),
                "similarities": [round(s, 5) for s in self.similarities]}


def torch_encoder(model: Encoder | str | None, device: str | None = None, precision: str | None = None) -> Encoder:
    """``model`` when it is an encoder gradients can flow through, else the model that name loads in torch.

    Raises :class:`UsageError` for an encoder that gives no gradients (ONNX Runtime) and for one whose
    images have no fixed size (SigLIP 2 NaFlex packs patches outside the model)."""
    if not isinstance(model, Encoder):
        model = load_model(model, device=device, backend="torch", precision=precision or "fp32")
    if not model.differentiable:
        raise UsageError(f"{model.name}: dream follows gradients through the model, which needs the torch backend "
                         f"(this one runs on {model.info.backend})", parameter="backend")
    if model.input_size is None:
        raise UsageError(f"{model.name}: its images have no fixed size (SigLIP 2 NaFlex packs patches outside the "
                         "model); dream needs a fixed-resolution model", parameter="model")
    return model


def check_size(size: tuple[int, int] | str) -> tuple[int, int]:
    """(width, height) from a pair or ``"WxH"``; raises :class:`UsageError` naming what is wrong."""
    if isinstance(size, str):
        try:
            size = parse_size(size)
        except ValueError:
            raise UsageError("give WIDTHxHEIGHT in pixels (e.g. 224x224)", value=size, parameter="size") from None
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UsageError("give (width, height) in pixels", value=repr(size), parameter="size") from None
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise UsageError(f"each side must be {MIN_SIDE} to {MAX_SIDE} pixels", value=f"{width}x{height}",
                         parameter="size")
    return width, height


def _init_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    shrink = min(1.0, INIT_MAX_SIDE / max(width, height))
    return max(MIN_SIDE, round(width * shrink)), max(MIN_SIDE, round(height * shrink))


@contextmanager
def deterministic_kernels(device):
    """On CUDA, attention in its plain (math) kernel: the fused kernels' backward passes add in
    nondeterministic order, and a seed must fix the image. Elsewhere nothing changes."""
    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def check_options(prompt: str, negative: str | Sequence[str] = (), steps: int = DEFAULT_STEPS, param: str = "fft",
                  lr: float | None = None, cutouts: int | None = None, tv_weight: float | None = None,
                  init_weight: float = DEFAULT_INIT_WEIGHT, frame_every: int | None = None,
                  size: tuple[int, int] | str | None = None,
                  guidance: str = DEFAULT_GUIDANCE,
                  against: str | Sequence[str] = ()) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Validate :func:`dream`'s options (before a model loads); returns the cleaned prompt, negatives and
    ``against`` texts (without repeats or the prompt itself)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise UsageError("the prompt is empty: say what the image should show", parameter="prompt")
    texts = {}
    for name, given in (("negative", negative), ("against", against)):
        given = (given,) if isinstance(given, str) else tuple(given or ())
        for n, text in enumerate(given):
            if not isinstance(text, str) or not text.strip():
                raise UsageError(f"text {n + 1} is empty", value=repr(text), parameter=name)
        texts[name] = tuple(dict.fromkeys(t.strip() for t in given))
    if param not in PARAMS:
        raise UsageError(f"choose from {', '.join(PARAMS)}", value=param, parameter="param")
    if guidance not in GUIDANCE:
        raise UsageError(f"choose from {', '.join(GUIDANCE)}", value=guidance, parameter="guidance")
    for value, name in ((steps, "steps"), (cutouts, "cutouts")):
        if value is not None and value < 1:
            raise UsageError(f"must be at least 1 (got {value})", parameter=name)
    if lr is not None and not lr > 0:
        raise UsageError(f"must be positive (got {lr})", parameter="lr")
    for value, name in ((tv_weight or 0, "tv_weight"), (init_weight, "init_weight"), (frame_every or 0, "frame_every")):
        if value < 0:
            raise UsageError(f"must not be negative (got {value})", parameter=name)
    if size is not None:
        check_size(size)
    prompt = prompt.strip()
    return prompt, texts["negative"], tuple(t for t in texts["against"] if t != prompt)


def dream(prompt: str, model: Encoder | str | None = None, *, negative: str | Sequence[str] = (),
          steps: int = DEFAULT_STEPS, size: tuple[int, int] | str | None = None, seed: int = 0,
          init: ImageSource | None = None, param: str = "fft", lr: float | None = None,
          cutouts: int | None = None, tv_weight: float | None = None,
          init_weight: float = DEFAULT_INIT_WEIGHT, augment: Augment | None = None, device: str | None = None,
          on_step: StepFn | None = None, frame_every: int | None = None, on_frame: FrameFn | None = None,
          guidance: str = DEFAULT_GUIDANCE, against: str | Sequence[str] = ()) -> Dream:
    """Generate an image that ``model`` judges to show ``prompt``; returns a :class:`Dream`.

    ``model``: a torch-backend encoder or a name (loaded in torch, fp32). ``negative``: prompts the
    image should not look like. ``size``: (width, height) or ``"WxH"``; default 256×256 (the model's
    input when larger), or with ``init`` the start image's own size (longer side at most 512). ``init``: a photo (path,
    bytes or PIL image) to edit toward the prompt, kept close to itself by ``init_weight``. ``guidance``:
    the recipe (:data:`GUIDANCE`) whose views, smoothness (``tv_weight``, unless given) and spectrum the
    gradients follow: ``object`` (one object of one colour on a plain ground), ``robust`` (an object on a plain
    ground) or ``plain`` (CLIP+FFT as it was). ``against``: texts the image must be told apart from (the
    other labels of a set, written as the prompt is): the prompt's cross-entropy among them joins the objective.
    ``param``: ``fft`` or ``pixel``. ``lr``: Adam's learning rate (default by ``param``).
    ``cutouts``: views per step (default: the recipe's; ``augment`` sets the other view options). ``on_step(step, steps,
    similarity)`` hears each step; ``on_frame(step, image)`` gets the image at step 0, every
    ``frame_every`` steps (default: about 40 frames in all) and at the end. The same ``seed`` on the same
    device gives the same image.
    """
    import torch
    import torch.nn.functional as F

    prompt, negative, against = check_options(prompt, negative, steps, param, lr, cutouts, tv_weight, init_weight,
                                              frame_every, size, guidance, against)
    if frame_every is None:
        frame_every = max(1, steps // FRAMES) if on_frame is not None else 0
    recipe = GUIDANCE[guidance]
    augment = augment or recipe.augment
    if cutouts is not None:
        augment = replace(augment, cutouts=cutouts)
    tv_weight = recipe.tv_weight if tv_weight is None else tv_weight
    explicit = check_size(size) if size is not None else None
    start_image = load_image(init) if init is not None else None
    if start_image is not None and augment.max_scale > 1:  # a photo has no transparent margin to zoom out into
        augment = replace(augment, min_scale=min(augment.min_scale, 1.0), max_scale=1.0)
    encoder = torch_encoder(model, device)
    out_h, out_w = encoder.input_size
    side = max(DEFAULT_SIDE, out_h, out_w)
    width, height = explicit or (_init_size(start_image) if start_image is not None else (side, side))
    lr = lr if lr is not None else DEFAULT_LR[param]

    started = time.perf_counter()
    dev = torch.device(encoder.info.device)
    texts = torch.from_numpy(encoder.encode_texts([prompt, *negative, *against])).to(dev)
    negatives, rivals = slice(1, 1 + len(negative)), slice(1 + len(negative), None)
    generator = torch.Generator().manual_seed(int(seed))
    start = None
    if start_image is not None:
        if start_image.size != (width, height):
            start_image = start_image.resize((width, height), Image.Resampling.LANCZOS)
        start = pil_to_tensor(start_image).to(dev)
    layered = bool(recipe.alpha) and start is None
    if layered and recipe.shading is not None:
        image_param = LayerColour.random(height, width, generator, str(dev), shading=recipe.shading)
        leaves = list(image_param.leaves)
    else:
        image_param = make_param(param, height, width, generator, str(dev), init=start, decay=recipe.decay)
        leaves = [image_param.param]
    mask = FourierAlpha.random(height, width, generator, str(dev), decay=recipe.decay) if layered else None
    leaves += [mask.param] if mask is not None else []
    if mask is not None:  # what is drawn costs more towards the edges: one object, in the middle, not cut off
        ys = torch.linspace(-1, 1, height, device=dev)[:, None]
        xs = torch.linspace(-1, 1, width, device=dev)[None, :]
        edge_cost = (0.25 + 1.5 * (ys * ys + xs * xs))[None, None]
    optimiser = torch.optim.Adam(leaves, lr=lr)

    def current():
        """The image as it stands (composited over the ground when it has a mask), its colours and its mask."""
        rgb = image_param.rgb()
        if mask is None:
            return rgb, rgb, None
        alpha = mask.alpha()
        return rgb * alpha + (1 - alpha) * GROUND, rgb, alpha

    def embed_views(image, rgb, alpha):
        rows, cols = draw_views(height, width, (out_h, out_w), augment, generator, pad=alpha is not None)
        rows, cols = rows.to(dev), cols.to(dev)
        if alpha is None:
            views = render_views(image, rows, cols, augment.noise, generator, augment.jitter)
        else:  # each view drawn over a plain ground of its own (a random grey), then jittered
            rgba = resample_views(torch.cat([rgb, alpha], 1), rows, cols)
            grounds = torch.rand((rgba.shape[0], 1, 1, 1), generator=generator).to(dev)
            views = perturb_views(rgba[:, :3] * rgba[:, 3:] + (1 - rgba[:, 3:]) * grounds, augment.noise, generator,
                                  augment.jitter, augment.desaturate)
        views = encoder.preprocessor.normalize_tensor(views)
        return F.normalize(encoder.image_features(views), dim=-1) @ texts.T

    similarities: list[float] = []
    first = None
    with deterministic_kernels(dev):
        for step in range(steps):
            image, rgb, alpha = current()
            if step == 0:
                first = tensor_to_pil(image)
                if on_frame is not None:
                    on_frame(0, first)
            sims = embed_views(image, rgb, alpha)
            similarity = sims[:, 0].mean()
            loss = -similarity
            if alpha is not None:
                loss = loss + recipe.alpha * (alpha * edge_cost).mean()
            if negative:
                loss = loss + sims[:, negatives].mean()
            if against:  # the prompt told apart from the rivals, at the model's own temperature
                logits = encoder.logit_scale * torch.cat([sims[:, :1], sims[:, rivals]], 1)
                loss = loss - AGAINST_WEIGHT * torch.log_softmax(logits, 1)[:, 0].mean() / encoder.logit_scale
            if tv_weight:
                loss = loss + tv_weight * total_variation(image)
            if start is not None and init_weight:
                loss = loss + init_weight * (image - start).pow(2).mean()
            for leaf, grad in zip(leaves, torch.autograd.grad(loss, leaves)):
                leaf.grad = grad
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            similarities.append(float(similarity.detach()))
            if on_step is not None:
                on_step(step + 1, steps, similarities[-1])
            if on_frame is not None and frame_every and (step + 1) % frame_every == 0 and step + 1 < steps:
                with torch.no_grad():
                    on_frame(step + 1, tensor_to_pil(current()[0]))
    with torch.no_grad():
        result = tensor_to_pil(current()[0])
    if on_frame is not None:
        on_frame(steps, result)
    vectors = encoder.encode_images([start_image if start_image is not None else first, result])
    prompt_vector = texts[0].cpu().numpy()
    start_sim, final_sim = (float(v) for v in vectors @ prompt_vector)
    seconds = time.perf_counter() - started
    settings = {"guidance": guidance, "lr": lr, "cutouts": augment.cutouts, "tv_weight": tv_weight,
                "init_weight": init_weight if start is not None else 0.0, "min_scale": augment.min_scale,
                "max_scale": augment.max_scale, "flip": augment.flip, "noise": augment.noise,
                "jitter": augment.jitter, "desaturate": augment.desaturate if mask is not None else 0.0,
                "shading": recipe.shading if mask is not None else None,
                "decay": recipe.decay if param == "fft" or mask is not None else None,
                "against_weight": AGAINST_WEIGHT if against else 0.0}
    return Dream(image=result, prompt=prompt, negative=negative, against=against, similarities=similarities,
                 similarity=final_sim,
                 start_similarity=start_sim, steps=steps, seed=int(seed), size=(width, height), param=param,
                 model=encoder.name, device=str(dev), seconds=seconds,
                 init=source_name(init) if init is not None else None, settings=settings)


def save_gif(frames: Sequence[Image.Image], path, *, duration_ms: int = 80) -> None:
    """Write frames as a looping GIF (the last frame held a second); its folder must exist."""
    if not frames:
        raise UsageError("no frames to write to the GIF", parameter="gif")
    durations = [duration_ms] * (len(frames) - 1) + [max(duration_ms, 1000)]
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=list(frames[1:]), duration=durations, loop=0)

