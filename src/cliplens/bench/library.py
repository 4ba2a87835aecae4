"""Indexing a photo library as it really is: what reading each photo's metadata costs, and how fast a 1080p
video indexes against real time.

``index_metadata_benchmark`` indexes the same photos (photo-sized JPEGs that carry EXIF: date and offset,
camera, GPS) into fresh indexes with and without reading their metadata, in alternating rounds, and
keeps each path's best images/s (the order swapped every round). ``video_benchmark`` generates a 1080p H.264 film once (panning over
photo-like pictures with sensor grain, a cut every few seconds, at a phone's bitrate) and times indexing
it: decoding and sampling alone, and with the model.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import ExifTags, Image

from ..files import atomic_path, atomic_write
from ..index.indexer import index_folders
from ..index.store import IndexStore
from ..inputs.video import VideoSampler
from ..models import Encoder
from .data import bench_root, photo

StatusFn = Callable[[str], None]

VIDEO_SIZE = (1920, 1080)
VIDEO_FPS = 30
SHOT_SECONDS = 4  # a cut every few seconds, as in edited footage


@dataclass
class IndexMetadataBench:
    images: int
    with_metadata_per_s: float
    without_metadata_per_s: float
    rounds: int

    @property
    def ratio(self) -> float:
        return self.with_metadata_per_s / self.without_metadata_per_s

    def to_dict(self) -> dict:
        return asdict(self) | {"ratio": round(self.ratio, 3)}


def _exif(i: int) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = "Canon", "Canon EOS R6"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = f"2019:07:{1 + i % 28:02d} 16:{i % 60:02d}:11"
    sub[ExifTags.Base.OffsetTimeOriginal] = "+02:00"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitude], gps[ExifTags.GPS.GPSLatitudeRef] = (48.0, 51.0, 30.24), "N"
    gps[ExifTags.GPS.GPSLongitude], gps[ExifTags.GPS.GPSLongitudeRef] = (2.0, 17.0, 40.2), "E"
    return exif.tobytes()


def photos_with_exif(sources: Sequence[Path]) -> Path:
    """Copies of ``sources`` (JPEGs) with an EXIF block like a camera's, made once in the cache (the block is
    spliced in after the start-of-image marker: the pixels are the originals', bit for bit)."""
    folder = bench_root() / f"photos-exif-{len(sources)}"
    folder.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sources):
        target = folder / f"IMG_{i:05d}.jpg"
        if target.exists():
            continue
        data = source.read_bytes()
        payload = b"Exif\x00\x00" + _exif(i)
        with atomic_write(target, "wb") as fh:
            fh.write(data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:])
    return folder


def index_metadata_benchmark(folder: Path, encoder: Encoder, *, rounds: int = 4,
                             on_status: StatusFn | None = None) -> IndexMetadataBench:
    """Images/s of indexing ``folder`` into a fresh index, with and without reading metadata, best of ``rounds``
    alternating rounds each."""
    status = on_status or (lambda message: None)
    best = {True: 0.0, False: 0.0}
    images = 0
    for round_no in range(rounds):
        for describe in ((False, True) if round_no % 2 == 0 else (True, False)):  # neither always goes first
            status(f"round {round_no + 1} of {rounds}: indexing {'with' if describe else 'without'} metadata")
            scratch = Path(tempfile.mkdtemp(prefix="cliplens-bench-index-"))
            try:
                store = IndexStore(scratch, create=True)
                try:
                    start = time.perf_counter()
                    run = index_folders([folder], encoder, store, describe=describe)
                    seconds = time.perf_counter() - start
                finally:
                    store.close()
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            images = run.encoded
            best[describe] = max(best[describe], run.encoded / seconds)
    return IndexMetadataBench(images, best[True], best[False], rounds)


@dataclass
class VideoBench:
    seconds_of_video: float
    width: int
    height: int
    fps: int
    bitrate_mbps: float
    scenes: int
    samples: int
    decode_s: float  # decoding and sampling alone
    index_s: float  # decoding, sampling, encoding and writing: a whole `cliplens index` of the file

    @property
    def decode_realtime(self) -> float:
        return self.seconds_of_video / self.decode_s

    @property
    def index_realtime(self) -> float:
        return self.seconds_of_video / self.index_s

    def to_dict(self) -> dict:
        return asdict(self) | {"decode_realtime": round(self.decode_realtime, 2),
                               "index_realtime": round(self.index_realtime, 2)}


def bench_video(seconds: int = 60, on_status: StatusFn | None = None) -> Path:
    """A 1080p30 H.264 film of ``seconds`` made once in the cache: slow pans over photo-like pictures with grain,
    a cut every :data:`SHOT_SECONDS`."""
    import av

    path = bench_root() / f"film-1080p-{seconds}s.mp4"
    if path.exists():
        return path
    status = on_status or (lambda message: None)
    width, height = VIDEO_SIZE
    shots = -(-seconds // SHOT_SECONDS)
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=VIDEO_FPS, options={"preset": "veryfast", "crf": "21"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.time_base = Fraction(1, VIDEO_FPS)
            per_shot = SHOT_SECONDS * VIDEO_FPS
            scene = None
            for frame_no in range(seconds * VIDEO_FPS):
                shot, f = divmod(frame_no, per_shot)
                if f == 0:
                    status(f"generating the 1080p test film (once): shot {shot + 1} of {shots}")
                    scene = np.asarray(photo(1000 + shot, (width + 480, height + 270)))
                x, y = (f * 4) % 480, (f * 2) % 270  # a pan
                pixels = scene[y : y + height, x : x + width]
                grain = rng.integers(-3, 4, (height // 4, width // 4, 1), dtype=np.int16).repeat(4, 0).repeat(4, 1)
                frame = av.VideoFrame.from_ndarray(np.clip(pixels + grain, 0, 255).astype(np.uint8), format="rgb24")
                frame.pts = frame_no
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def video_benchmark(path: Path, encoder: Encoder, *, on_status: StatusFn | None = None) -> VideoBench:
    """Time decoding and sampling ``path`` alone, then indexing it (a fresh index) with ``encoder``."""
    status = on_status or (lambda message: None)
    status("decoding and sampling the film")
    sampler = VideoSampler(path, side=encoder.draft_size or 224)
    start = time.perf_counter()
    samples = scenes = 0
    for sample in sampler:
        samples += 1
        scenes = sample.scene + 1
    decode_s = time.perf_counter() - start
    status("indexing the film")
    folder = Path(tempfile.mkdtemp(prefix="cliplens-bench-video-"))
    try:
        (folder / "films").mkdir()
        (folder / "films" / path.name).symlink_to(path)
        store = IndexStore(folder / "index", create=True)
        try:
            start = time.perf_counter()
            run = index_folders([folder / "films"], encoder, store)
            index_s = time.perf_counter() - start
        finally:
            store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if run.failed:
        raise RuntimeError(f"the test film failed to index: {run.errors[0].reason}")
    bitrate = path.stat().st_size * 8 / sampler.duration / 1e6
    return VideoBench(sampler.duration, sampler.width, sampler.height, VIDEO_FPS, round(bitrate, 2), scenes, samples,
                      decode_s, index_s)
