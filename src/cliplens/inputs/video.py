"""Videos (mp4, mov, mkv, webm, avi, m4v) as a few moments worth embedding, through PyAV (the ``video`` extra).

A video is decoded once, with FFmpeg's threads, without its non-reference frames and without the
deblocking filter (nothing here needs either at the model's 224 px; together they cut the decoding of
a 1080p H.264 file by about 45%). Four times a second a tiny copy of the frame is compared with the
one before (a jump in its pixels is a cut) and with the first frame of the current scene (a shift in
its colour histogram is a slow drift to another view, which a pan alone does not give): either starts a
new scene. A frame is *sampled* (kept, at the size the model needs) about once a second and at the start
of each scene. The caller embeds the samples and keeps one vector per
scene, so a two-hour film gives a few hundred vectors, not a quarter of a million frames.

The container's creation time and an ISO 6709 location (as phones write them) describe the video as
EXIF describes a photo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..errors import ImageLoadError
from .metadata import PhotoMetadata, file_time

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})

SAMPLE_EVERY = 1.0  # seconds between sampled frames within a scene
CHECK_EVERY = 0.25  # seconds between looks for a cut
CUT = 0.1  # mean absolute colour difference (0–1) from the frame a quarter second before: a cut
DRIFT = 0.35  # colour histograms this far apart (total variation, 0–1) from the scene's first frame: another view
_TINY = (32, 18)  # the tiny frame compared for cuts
_BINS = 8  # histogram bins per channel

_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")


class VideoUnavailable(ImportError):
    """PyAV is not installed."""


class VideoDecodeError(ValueError):
    """The file is not a video FFmpeg can decode (damaged, truncated, no video stream)."""


@dataclass
class Sample:
    """A frame kept for embedding: its time (seconds from the start), picture, and the scene it belongs to
    (scenes are numbered from 0 in order; a scene starts at its first sample's time)."""

    time: float
    image: Image.Image
    scene: int


def _av():
    try:
        import av  # type: ignore[import-not-found]
    except ImportError:
        raise VideoUnavailable("av") from None
    return av


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _scaled(width: int, height: int, side: int) -> tuple[int, int]:
    """The size whose shorter side is ``side`` (never larger than the frame)."""
    scale = min(1.0, side / max(1, min(width, height)))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _open(av, path: str | Path):
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise VideoDecodeError(_reason(exc)) from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError("no video stream")
    return container


def _reason(exc: BaseException) -> str:
    text = str(exc)
    lowered = text.lower()
    if "invalid data" in lowered or "moov atom" in lowered or "end of file" in lowered or "truncat" in lowered:
        return "truncated or corrupt video"
    return f"cannot decode video ({text or type(exc).__name__})"


def _frames(av, container, stream) -> Iterator:
    """Decoded frames with a known time; a decoding error past the first frames ends the video there (a file
    cut short keeps what was whole), before any frame it is the file's error."""
    decoded = 0
    try:
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            decoded += 1
            yield frame
    except (av.FFmpegError, ValueError) as exc:
        if decoded == 0:
            raise VideoDecodeError(_reason(exc)) from None


class VideoSampler:
    """Sample a video's frames (about one every ``every`` seconds, and one at each scene's start) at a size
    whose shorter side is ``side``: iterate it for the :class:`Sample` s, one at a time (a long film is never
    held in memory); afterwards ``duration``, ``width`` and ``height`` are known.

    Iterating raises :class:`VideoUnavailable` without PyAV and :class:`VideoDecodeError` for a file that
    cannot be decoded.
    """

    def __init__(self, path: str | Path, *, side: int = 224, every: float = SAMPLE_EVERY, cut: float = CUT,
                 drift: float = DRIFT):
        self.path, self.side, self.every, self.cut, self.drift = path, side, every, cut, drift
        self.duration = 0.0
        self.width = self.height = 0

    def __iter__(self) -> Iterator[Sample]:
        av = _av()
        container = _open(av, self.path)
        try:
            stream = container.streams.video[0]
            _fast_decoding(stream)
            scene, previous, first = -1, None, None
            next_check = next_sample = last_time = 0.0
            for frame in _frames(av, container, stream):
                t = float(frame.time)
                last_time = max(last_time, t)
                if t < next_check and t < next_sample:
                    continue
                self.width, self.height = frame.width, frame.height
                next_check = t + CHECK_EVERY
                tiny = frame.reformat(width=_TINY[0], height=_TINY[1], format="rgb24").to_ndarray()
                tiny = tiny[:, : _TINY[0]].astype(np.float32) / 255.0
                colours = _histogram(tiny)
                new_scene = previous is None or float(np.abs(tiny - previous).mean()) > self.cut or \
                    0.5 * float(np.abs(colours - first).sum()) > self.drift
                previous = tiny
                if new_scene:
                    scene, first = scene + 1, colours
                if new_scene or t >= next_sample:
                    w, h = _scaled(frame.width, frame.height, self.side)
                    yield Sample(t, frame.to_image(width=w, height=h), scene)
                    next_sample = t + self.every
            if scene < 0:
                raise VideoDecodeError("no frame could be decoded")
            self.duration = _duration(container, stream, last_time)
        finally:
            container.close()


def _fast_decoding(stream) -> None:
    """Decode with FFmpeg's threads, skipping non-reference frames and the deblocking filter."""
    stream.thread_type = "AUTO"
    stream.codec_context.options = {"skip_loop_filter": "all"}
    stream.codec_context.skip_frame = "NONREF"


def _histogram(tiny: np.ndarray) -> np.ndarray:
    """A tiny frame's colour histogram, :data:`_BINS` per channel, as shares summing to 3."""
    bins = np.minimum((tiny * _BINS).astype(np.int64), _BINS - 1)
    counts = np.stack([np.bincount(bins[..., c].ravel(), minlength=_BINS) for c in range(3)])
    return (counts / bins[..., 0].size).ravel()


def _duration(container, stream, last_time: float) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return last_time


def frame_at(path: str | Path, time: float, *, side: int = 512) -> Image.Image:
    """The frame shown at ``time`` seconds (the first frame at or after it), shorter side at most ``side``."""
    av = _av()
    container = _open(av, path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if time > 0 and stream.time_base is not None:
            container.seek(int(time / stream.time_base), stream=stream, backward=True)
        chosen = None
        for frame in _frames(av, container, stream):
            chosen = frame
            if frame.time >= time - 1e-3:
                break
        if chosen is None:
            raise VideoDecodeError("no frame could be decoded")
        w, h = _scaled(chosen.width, chosen.height, side)
        return chosen.to_image(width=w, height=h)
    finally:
        container.close()


def load_video_frame(path: str | Path, time: float, *, side: int = 512) -> Image.Image:
    """:func:`frame_at`, with every failure as the :class:`~cliplens.errors.ImageLoadError` of the file."""
    try:
        return frame_at(path, time, side=side)
    except VideoUnavailable:
        raise ImageLoadError(str(path), "video file needs the video extra: pip install 'cliplens[video]'") from None
    except VideoDecodeError as exc:
        raise ImageLoadError(str(path), str(exc)) from None


def read_video_metadata(path: str | Path, mtime_ns: int | None = None) -> PhotoMetadata:
    """When and where a video was made, from its container's tags (else dated by the file's time)."""
    taken = source = lat = lon = None
    make = model = None
    try:
        av = _av()
        with av.open(str(path), metadata_errors="ignore") as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}
            for stream in container.streams:
                tags = {**{k.lower(): v for k, v in stream.metadata.items()}, **tags}
    except Exception:  # noqa: BLE001 - an unreadable header describes nothing; sampling reports the file
        tags = {}
    created = tags.get("com.apple.quicktime.creationdate") or tags.get("creation_time")
    if created:
        try:
            stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
            local = stamp.astimezone() if stamp.tzinfo is not None else stamp
            taken, source = local.isoformat(timespec="seconds"), "video"
        except ValueError:
            pass
    where = _ISO6709.match(tags.get("com.apple.quicktime.location.iso6709") or tags.get("location") or "")
    if where:
        lat, lon = float(where.group(1)), float(where.group(2))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
            lat = lon = None
    make = tags.get("com.apple.quicktime.make") or tags.get("make")
    model = tags.get("com.apple.quicktime.model") or tags.get("model")
    if taken is None and mtime_ns is not None:
        taken, source = file_time(mtime_ns), "file"
    return PhotoMetadata(taken, source, make or None, model or None, lat, lon, None)
