"""Camera RAW and video files the tests write themselves: a DNG from any RGB picture (tifffile), and an H.264
video of picture segments (PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

# XYZ (D65) to linear sRGB: the DNG's ColorMatrix1 says its camera sees linear sRGB
_XYZ_TO_SRGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
_WHITE = 4095


def write_dng(path: Path, picture: Image.Image, *, preview: Image.Image | None = None, orientation: int = 1) -> Path:
    """A DNG whose RGGB mosaic samples ``picture`` (sRGB, linearised), with ``preview`` as an uncompressed RGB
    preview in the first directory when given (the raw image then lives in its sub-directory)."""
    import tifffile

    rgb = np.asarray(picture.convert("RGB"), np.float64) / 255.0
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    h, w = (d - d % 2 for d in linear.shape[:2])
    mosaic = np.zeros((h, w), np.uint16)
    for (dy, dx), channel in (((0, 0), 0), ((0, 1), 1), ((1, 0), 1), ((1, 1), 2)):
        mosaic[dy::2, dx::2] = np.rint(linear[dy:h:2, dx:w:2, channel] * _WHITE)
    matrix = []
    for row in _XYZ_TO_SRGB:
        for value in row:
            matrix += [int(round(value * 10000)), 10000]
    dng = [(50706, "B", 4, (1, 4, 0, 0), True), (50707, "B", 4, (1, 1, 0, 0), True),
           (50708, "s", 0, "cliplens test camera", True), (271, "s", 0, "cliplens", True),
           (272, "s", 0, "test camera", True), (274, "H", 1, orientation, True),
           (50721, "2i", 9, tuple(matrix), True), (50778, "H", 1, 21, True), (50728, "2I", 3, (1, 1) * 3, True)]
    cfa = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True), (50717, "I", 1, _WHITE, True)]
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(mosaic, photometric=32803, subfiletype=0, extratags=dng + cfa)
        else:
            tif.write(np.asarray(preview.convert("RGB")), photometric="rgb", subfiletype=1, subifds=1, extratags=dng)
            tif.write(mosaic, photometric=32803, subfiletype=0, extratags=cfa)
    return path


def write_video(path: Path, segments: list[tuple[Image.Image, float]], *, size: tuple[int, int] = (320, 240),
                fps: int = 24, codec: str = "libx264") -> Path:
    """A video showing each picture for its seconds, in turn (H.264 in an MP4 by default)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        frame_no = 0
        for picture, seconds in segments:
            pixels = np.asarray(picture.convert("RGB").resize(size))
            for _ in range(int(round(seconds * fps))):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = frame_no
                frame_no += 1
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
