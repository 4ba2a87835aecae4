"""What the benchmarks run on when the user gives nothing: a ViT-B/32 with random weights and
photo-sized JPEGs. Both are made once and kept in the cache.

Speed does not depend on the weights' values, so a random ViT-B/32 times exactly as
``openai/clip-vit-base-patch32`` does (its tokenizer here is word-level over the ImageNet class
names, which gives prompts about as many tokens as CLIP's BPE does).
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..files import atomic_folder, atomic_path, atomic_write, atomic_write_json, cache_dir

BENCH_MODEL = "vit-b32-random"
PHOTO_SIZE = (3000, 2000)
OPENAI_PREPROCESSOR = {
    "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 224}, "resample": 3,
    "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def bench_root() -> Path:
    return cache_dir() / "bench"


def vit_b32_dir() -> Path:
    """A CLIP ViT-B/32 (openai/clip-vit-base-patch32's architecture) with seeded random weights."""
    folder = bench_root() / BENCH_MODEL
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import CLIPConfig, CLIPModel

    from ..inputs.wordlists import imagenet_classes
    from ..train import build_word_tokenizer

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer([" ".join(imagenet_classes()) + " a photo of the"], 77)
    text = dict(vocab_size=49408, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    config = CLIPConfig(text_config=text, vision_config=dict(patch_size=32, image_size=224), projection_dim=512)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as tmp:
        CLIPModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "preprocessor_config.json", OPENAI_PREPROCESSOR)
    return folder


def photo(seed: int, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """A photo-like image: smooth colour fields, shapes with soft edges, and sensor-like grain."""
    rng = np.random.default_rng(seed)
    width, height = size
    field = Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(field)
    pick = random.Random(seed)
    for _ in range(pick.randint(8, 30)):
        x, y = pick.randrange(width), pick.randrange(height)
        r = pick.randrange(width // 40, width // 5)
        colour = tuple(pick.randrange(256) for _ in range(3))
        kind = pick.choice(("ellipse", "rectangle", "polygon"))
        if kind == "polygon":
            draw.polygon([(x + pick.randint(-r, r), y + pick.randint(-r, r)) for _ in range(pick.randint(3, 7))],
                         fill=colour)
        else:
            getattr(draw, kind)((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
    field = field.filter(ImageFilter.GaussianBlur(2))
    grain = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    pixels = np.clip(np.asarray(field, np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def photo_paths(n: int, size: tuple[int, int] = PHOTO_SIZE) -> list[Path]:
    """Where the ``n`` generated photos of this size live (made by :func:`photo_folder`)."""
    folder = bench_root() / f"photos-{size[0]}x{size[1]}"
    return [folder / f"photo_{i:05d}.jpg" for i in range(n)]


def photo_folder(n: int = 200, size: tuple[int, int] = PHOTO_SIZE, on_progress: Callable[[int, int], None] | None = None
                 ) -> Path:
    """``n`` photo-sized JPEGs (quality 90), generated once into the cache."""
    paths = photo_paths(n, size)
    folder = paths[0].parent
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i, path in enumerate(paths) if not path.exists()]

    def make(i: int) -> None:
        with atomic_path(paths[i]) as tmp:
            photo(i, size).save(tmp, "JPEG", quality=90)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done, _ in enumerate(pool.map(make, missing), 1):
            if on_progress is not None:
                on_progress(done, len(missing))
    return folder


def many_files(source: Path, count: int, name: str) -> Path:
    """A folder of ``count`` distinct JPEG files made from the photos in ``source``, round robin.

    Each copy gets a JPEG comment naming its number: it decodes to the same pixels, but its bytes (and
    so its hash) are its own, so an index encodes every one of them rather than reusing vectors.
    """
    folder = bench_root() / name
    originals = sorted(source.glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        target = folder / f"img_{i:06d}.jpg"
        if not target.exists():
            data = originals[i % len(originals)].read_bytes()
            comment = f"cliplens bench copy {i}".encode()
            segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
            with atomic_write(target, "wb") as fh:
                fh.write(data[:2] + segment + data[2:])  # right after the JPEG's start-of-image marker
    return folder
