"""Full versus reduced-scale (Pillow draft mode) decoding of large JPEGs, as the model input sees them.

    python benchmarks/jpeg_draft.py [--size 4000x3000] [--target 224] [--repeat 5]

Prints decode+resize time for each path, the speed-up, and the largest pixel difference of the 224 px
model input between the two paths. Uses only the public API (``import cliplens``).
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image, ImageDraw

import cliplens


def photo_like(width: int, height: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 150 + 60], -1)
    base += np.random.default_rng(0).normal(0, 8, base.shape)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for i in range(40):
        cx, cy = (i * 97) % width, (i * 61) % height
        draw.ellipse((cx, cy, cx + width // 12, cy + height // 12), fill=((i * 50) % 255, 90, (i * 30) % 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--target", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    data = photo_like(width, height)
    pre = cliplens.ImagePreprocessor(shortest_edge=args.target, crop=(args.target, args.target))

    def run(draft: int | None) -> tuple[float, np.ndarray]:
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            pixels = pre.resize_crop(cliplens.load_image(data, draft_size=draft))
            best = min(best, time.perf_counter() - start)
        return best, pixels

    full_time, full = run(None)
    draft_time, draft = run(pre.draft_size)
    diff = np.abs(full.astype(int) - draft.astype(int))
    print(f"image {width}x{height} JPEG, model input {args.target}px, best of {args.repeat}")
    print(f"full decode + resize   {full_time * 1000:8.1f} ms")
    print(f"draft decode + resize  {draft_time * 1000:8.1f} ms")
    print(f"speed-up               {full_time / draft_time:8.2f}x")
    print(f"input pixel difference mean {diff.mean():.2f}, max {diff.max()} (0-255)")


if __name__ == "__main__":
    main()
