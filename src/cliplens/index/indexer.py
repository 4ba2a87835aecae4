"""Building and updating an index: only what changed is read, only what is new is encoded.

A file whose size and mtime match its row is skipped without being read. Otherwise it is hashed
(in the decode workers, from the bytes they read anyway): the same hash as its row means only the
stat changed; the hash of a row whose file has gone means a move or rename, and the row follows the
file; the hash of a row still present means a copy, which reuses that vector. Everything else is
decoded and encoded, a batch at a time, each batch committed as it finishes.

Videos go the same way, one at a time after the images: hashed as a stream (a film is not read into
memory), sampled (see :mod:`cliplens.inputs.video`) while the model encodes the samples before, and
written as one row with its scenes in one transaction.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import ImageLoadError, UsageError
from ..files import display_path
from ..inputs.images import IMAGE_EXTENSIONS, expand_paths, load_image
from ..inputs.metadata import PhotoMetadata, read_metadata
from ..inputs.ocr import read_text, text_cover
from ..inputs.video import VIDEO_EXTENSIONS, VideoDecodeError, VideoSampler, VideoUnavailable, is_video, \
    load_video_frame, read_video_metadata
from ..models import Encoder, l2_normalize
from ..models.keys import checkpoint_key
from ..vectors.batches import default_workers, prefetch_batches, prefetch_iter
from .store import IndexStore, NewRow, SceneRow
from .sync import sync_vector_index

ProgressFn = Callable[[int, int], None]
OCR_SIDE = 1024  # photos are read for text at (at least) this size, not the model's


@dataclass
class IndexRun:
    """What one run did."""

    index: str
    model: str
    files: int = 0  # files found under the folders given
    unchanged: int = 0
    encoded: int = 0  # images run through the model
    reused: int = 0  # copies and re-saved files whose vector was reused by hash
    moved: int = 0
    removed: int = 0
    failed: int = 0
    texts_read: int = 0  # with ocr: photos and scenes whose text was read this run
    seconds: float = 0.0
    errors: list[ImageLoadError] = field(default_factory=list)
    recovered: object = None  # the store's Recovery when the run began by rebuilding a damaged database

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("errors", "recovered")}
        out["errors"] = [{"path": e.source, "reason": e.reason} for e in self.errors]
        if self.recovered is not None:
            out["recovered"] = {"moved_to": display_path(self.recovered.moved_to), "kept": self.recovered.kept,
                                "lost": self.recovered.lost}
        return out


@dataclass
class _Seen:
    """One changed or new file after the worker looked at it."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None
    pixels: object = None
    dims: tuple[int, int] | None = None
    error: ImageLoadError | None = None
    meta: PhotoMetadata | None = None  # read from the header of the bytes hashed: no second read, no decode
    scenes: list[SceneRow] | None = None  # a video's, once sampled and encoded


def _read_hashed(path: str) -> tuple[str, bytes]:
    """A file's SHA-256 and its bytes (decoded from memory afterwards, so the file is read once)."""
    data = Path(path).read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def index_folders(folders: Sequence[str | os.PathLike], encoder: Encoder, store: IndexStore, *,
                  exclude: Iterable[str] = (), reindex: bool = False, batch_size: int | None = None,
                  workers: int | None = None, on_progress: ProgressFn | None = None,
                  encode_batches=None, describe: bool = True, ocr: bool = False) -> IndexRun:
    """Bring ``store`` up to date with the images under ``folders``, encoding with ``encoder``.

    ``encode_batches(todo, hash_only, known, by_hash)`` replaces the local decode-and-encode loop (the
    Ray engine passes its own): it yields ``(files, vectors)`` batches covering ``todo``, where a file
    whose content is already known (by path and hash, or by hash) gets vector None, a bad one gets its
    ``error`` set, and every other file gets its vector.

    ``describe`` False leaves the photos' metadata unread (``cliplens bench index`` measures what reading it
    costs); the next run that describes reads it then. ``ocr`` reads the text in every photo and video scene
    whose text was never read (new ones, and those indexed before without it; no vector is encoded again),
    for search by the words in a photo.
    """
    reader = text_cover("ocr") if ocr else None  # no OCR engine: say so before anything is done
    start = time.perf_counter()
    fingerprint = checkpoint_key(encoder.info.path)
    if reindex and store.model is not None and store.model.fingerprint != fingerprint:
        store.reset()
    store.check_model(encoder.name, fingerprint, action="update it")
    if store.model is None:
        named = Path(encoder.name).expanduser()  # a folder is kept as an absolute path, to load from anywhere
        store.bind_model(str(named.resolve()) if named.is_dir() else encoder.name, fingerprint, encoder.embed_dim)
    roots = [Path(f).expanduser().resolve() for f in folders]
    for root in roots:
        if not root.is_dir():
            raise UsageError("not a folder (an index is built from folders of images)", value=display_path(root), parameter="folders")
    store.add_roots(str(root) for root in roots)
    unreadable: list[ImageLoadError] = []
    paths = [str(p.resolve()) for p in expand_paths(roots, exclude=exclude, problems=unreadable,
                                                    extensions=IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)]
    run = IndexRun(display_path(store.folder), encoder.name, files=len(paths), failed=len(unreadable),
                   errors=list(unreadable))
    known = store.rows()
    found = set(paths)
    # a file under a folder that could not be read now is not gone: its row (and vector) stays
    hidden = [Path(problem.path) for problem in unreadable]
    gone = {p: row for p, row in known.items() if _under(p, roots) and not _under(p, hidden) and p not in found}
    by_hash = {row.sha256: row for row in known.values() if row.sha256 and row.has_vector}
    todo, touch = [], []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as exc:  # deleted (or made unreadable) since the folder was listed
            if isinstance(exc, FileNotFoundError):  # gone: like a file deleted before the run, its row leaves
                run.files -= 1
                if path in known and _under(path, roots) and not _under(path, hidden):
                    gone[path] = known[path]
            else:
                problem = ImageLoadError(path, f"unreadable ({exc.strerror or exc})")
                run.failed += 1
                run.errors.append(problem)
            continue
        row = known.get(path)
        if row is not None and row.size == stat.st_size and row.mtime_ns == stat.st_mtime_ns:
            run.unchanged += 1
        else:
            todo.append(_Seen(path, stat.st_size, stat.st_mtime_ns))

    def look(i: int, decode: bool = True) -> _Seen:
        """Hash a changed or new file and, unless its content is known (or ``decode`` is off), decode it."""
        seen = todo[i]
        try:
            seen.sha256, data = _read_hashed(seen.path)
        except OSError as exc:
            seen.error = ImageLoadError(seen.path, f"unreadable ({exc.strerror or exc})")
            return seen
        seen.meta = read_metadata(data, seen.mtime_ns) if describe else None
        row = known.get(seen.path)
        if (row is not None and row.sha256 == seen.sha256) or seen.sha256 in by_hash or not decode:
            return seen  # same content as a known vector: no decode
        try:
            image = load_image(data if data else seen.path, draft_size=encoder.draft_size)
            seen.dims = image.size
            seen.pixels = encoder.prepare(image)
        except ImageLoadError as exc:
            seen.error = ImageLoadError(seen.path, exc.reason)
        return seen

    batch_size = batch_size or encoder.image_batch_size
    workers = workers if workers is not None else default_workers()
    videos = [seen for seen in todo if is_video(seen.path)]
    todo = [seen for seen in todo if not is_video(seen.path)]
    if encode_batches is not None:  # another engine decodes and encodes; hashing stays here
        batches = encode_batches(todo, lambda i: look(i, decode=False), known, by_hash)
    else:
        batches = _local_batches(todo, look, encoder, batch_size, workers)
    known_content = {row.sha256 for row in known.values() if row.sha256 and row.has_vector}
    batches = itertools.chain(batches, _video_batches(videos, encoder, batch_size, known, known_content))
    described: list = []
    done = run.unchanged
    total = done + len(todo) + len(videos)  # the files this run looks at (not those that vanished or could not be stat'd)
    if on_progress is not None:
        on_progress(done, total)
    for batch, vectors in batches:
        rows, moves = [], []
        for seen, vector in zip(batch, vectors):
            if seen.error is not None:
                run.failed += 1
                run.errors.append(seen.error)
                rows.append(NewRow(seen.path, seen.size, seen.mtime_ns, seen.sha256, error=seen.error.reason))
                continue
            row = known.get(seen.path)
            if vector is None and row is not None and row.sha256 == seen.sha256:
                touch.append((row.id, seen.size, seen.mtime_ns))  # re-saved with the same bytes
                described.append((row.id, seen.meta))  # a date from the file's time follows it
                run.unchanged += 1
            elif vector is None:
                source = by_hash[seen.sha256]
                if source.path in gone:  # moved or renamed: the row follows the file
                    del gone[source.path]
                    moves.append((source.id, NewRow(seen.path, seen.size, seen.mtime_ns, seen.sha256,
                                                    meta=seen.meta)))
                    run.moved += 1
                else:  # a copy: same vector (a video: same scenes), no model run
                    video = source.kind is not None
                    rows.append(NewRow(seen.path, seen.size, seen.mtime_ns, seen.sha256, source.width,
                                       source.height, vector=None if video else store.vectors([source.id])[1][0],
                                       meta=seen.meta, scenes=store.scenes(source.id) if video else None))
                    run.reused += 1
            else:
                rows.append(NewRow(seen.path, seen.size, seen.mtime_ns, seen.sha256, *seen.dims,
                                   vector=None if seen.scenes is not None else vector, meta=seen.meta,
                                   scenes=seen.scenes))
                run.encoded += 1
        if rows or moves:
            store.write_batch(rows, moves=moves)
        done += len(batch)
        if on_progress is not None:
            on_progress(done, total)
    store.touch(touch)
    if describe:
        store.set_metadata(described)
        _describe_unread(store, found, roots)
    if gone:
        store.write_batch([], removals=list(gone))
        run.removed = len(gone)
    sync_vector_index(store)
    if reader is not None:
        run.texts_read = _read_texts(store, found, roots, on_progress)
    run.seconds = time.perf_counter() - start
    return run


def _local_batches(todo: list[_Seen], look, encoder: Encoder, batch_size: int, workers: int):
    """(batch, vectors) pairs: files looked at in decode workers, then the new images of each batch encoded."""
    for batch in prefetch_batches(len(todo), look, batch_size, workers):
        fresh = [i for i, seen in enumerate(batch) if seen.pixels is not None]
        vectors: list = [None] * len(batch)
        if fresh:
            encoded = encoder.encode_prepared([batch[i].pixels for i in fresh])
            for i, vector in zip(fresh, encoded):
                vectors[i] = vector
        for seen in batch:
            seen.pixels = None  # free the pixels once encoded
        yield batch, vectors


def _video_batches(videos: list[_Seen], encoder: Encoder, batch_size: int, known: dict, known_content: set[str]):
    """(batch, vectors) pairs of one video each: a video whose content the index holds gets vector None (the
    caller reuses its scenes), a bad one its ``error``, any other its scenes (and a vector that is not None)."""
    for seen in videos:
        try:
            seen.sha256 = _hash_file(seen.path)
        except OSError as exc:
            seen.error = ImageLoadError(seen.path, f"unreadable ({exc.strerror or exc})")
            yield [seen], [None]
            continue
        seen.meta = read_video_metadata(seen.path, seen.mtime_ns)
        row = known.get(seen.path)
        if (row is not None and row.sha256 == seen.sha256) or seen.sha256 in known_content:
            yield [seen], [None]
            continue
        try:
            seen.scenes, seen.dims = _encode_video(seen.path, encoder, batch_size)
        except VideoUnavailable:
            seen.error = ImageLoadError(seen.path, "video file needs the video extra: pip install 'cliplens[video]'")
        except VideoDecodeError as exc:
            seen.error = ImageLoadError(seen.path, str(exc))
        yield [seen], [seen.scenes]


def _encode_video(path: str, encoder: Encoder, batch_size: int) -> tuple[list[SceneRow], tuple[int, int]]:
    """A video's scenes, each with the normalised mean of its samples' vectors, and the video's frame size.
    Samples are decoded in a thread ahead of the model, a batch at a time."""
    sampler = VideoSampler(path, side=encoder.draft_size or 224)

    def chunks():
        chunk: list = []
        for sample in sampler:
            chunk.append((sample.time, sample.scene, encoder.prepare(sample.image)))
            if len(chunk) == batch_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    sums: dict[int, np.ndarray] = {}
    starts: dict[int, float] = {}
    for chunk in prefetch_iter(chunks()):
        vectors = encoder.encode_prepared([pixels for _, _, pixels in chunk])
        for (time_s, scene, _), vector in zip(chunk, vectors):
            starts.setdefault(scene, time_s)
            sums[scene] = sums.get(scene, 0) + vector
    order = sorted(starts)
    ends = [starts[n] for n in order[1:]] + [max(sampler.duration, starts[order[-1]])]
    scenes = [SceneRow(starts[n], end, l2_normalize(sums[n][None])[0]) for n, end in zip(order, ends)]
    return scenes, (sampler.width, sampler.height)


def _hash_file(path: str) -> str:
    """A file's SHA-256, read as a stream."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _read_texts(store: IndexStore, found: set[str], roots: Sequence[Path], on_progress: ProgressFn | None,
                chunk: int = 50) -> int:
    """Read the text in the photos and scenes that have none read yet, storing it ``chunk`` rows at a time
    (a killed run keeps what it read); returns how many were read."""
    todo = [(i, path, t) for i, path, t in store.unread_texts() if path in found and _under(path, roots)]
    done = 0
    for start in range(0, len(todo), chunk):
        rows = []
        for row_id, path, moment in todo[start : start + chunk]:
            try:
                image = load_image(path, draft_size=OCR_SIDE) if moment is None else \
                    load_video_frame(path, moment, side=OCR_SIDE)
            except ImageLoadError:  # changed or gone since: the next run reads it
                continue
            rows.append((row_id, "\n".join(r.text for r in read_text(image) if r.is_text)))
        store.set_texts(rows)
        done += len(rows)
        if on_progress is not None:
            on_progress(min(start + chunk, len(todo)), len(todo))
    return done


def _describe_unread(store: IndexStore, found: set[str], roots: Sequence[Path], chunk: int = 500) -> None:
    """Read the metadata of indexed files that have none yet (an index from before schema 3 upgrades in place:
    headers only, no decoding, no re-encoding), in transactions of ``chunk`` files."""
    todo = [(i, path, mtime) for i, path, mtime in store.undescribed() if path in found and _under(path, roots)]
    for start in range(0, len(todo), chunk):
        rows = []
        for row_id, path, mtime_ns in todo[start : start + chunk]:
            try:
                with open(path, "rb") as fh:
                    rows.append((row_id, read_metadata(fh, mtime_ns)))
            except OSError:  # gone or unreadable since it was listed: the next run tries again
                continue
        store.set_metadata(rows)


def _under(path: str, roots: Sequence[Path]) -> bool:
    return any(path == str(root) or path.startswith(str(root) + os.sep) for root in roots)
