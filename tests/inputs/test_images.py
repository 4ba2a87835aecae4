"""Image loading: formats, modes, orientation, broken files, path expansion and JPEG draft decoding."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cliplens.errors import ImageLoadError, UsageError
from cliplens.inputs.images import DEFAULT_MAX_PIXELS, expand_paths, image_size, iter_loaded, load_image, max_pixels

from image_corpus import (BLUE, CORPUS, GREEN, RED, WHITE, array, encode, frames, grey, half, noise,
                          png_claiming_size, quadrants, strip, with_exif_orientation)


# ---------------------------------------------------------------- formats and orientation


@pytest.mark.parametrize(("fmt", "suffix", "tolerance"), [
    ("JPEG", ".jpg", 16), ("PNG", ".png", 0), ("GIF", ".gif", 0), ("WEBP", ".webp", 16),
    ("TIFF", ".tif", 0), ("BMP", ".bmp", 0),
])
def test_each_format_loads_as_8bit_rgb_with_its_colours(tmp_path, fmt, suffix, tolerance):
    path = tmp_path / f"quadrants{suffix}"
    path.write_bytes(encode(quadrants(), fmt))
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (32, 24)
    arr = np.asarray(image, dtype=int)
    for (x, y), colour in (((4, 4), RED), ((28, 4), GREEN), ((4, 20), BLUE), ((28, 20), WHITE)):
        assert np.abs(arr[y, x] - colour).max() <= tolerance, (fmt, (x, y), arr[y, x])


@pytest.mark.parametrize(("fmt", "options"), [("GIF", {}), ("WEBP", {"lossless": True}), ("TIFF", {})])
def test_multi_frame_files_give_their_first_frame(fmt, options):
    image = load_image(frames(fmt, **options))
    assert image.mode == "RGB" and image.getpixel((4, 4)) == RED


@pytest.mark.parametrize(("orientation", "size", "red_corner", "blue_corner"), [
    (1, (40, 20), (0, 0), (39, 19)), (2, (40, 20), (39, 0), (0, 19)), (3, (40, 20), (39, 19), (0, 0)),
    (6, (20, 40), (19, 0), (0, 39)),  # turned clockwise: the top-left pixel ends top-right
    (8, (20, 40), (0, 39), (19, 0)),  # turned anticlockwise: it ends bottom-left
])
def test_exif_orientation_is_applied_to_pixels(tmp_path, orientation, size, red_corner, blue_corner):
    picture = Image.new("RGB", (40, 20), BLUE)
    picture.paste(RED, (0, 0, 10, 10))
    path = tmp_path / f"orientation{orientation}.jpg"
    path.write_bytes(with_exif_orientation(picture, orientation))
    image = load_image(path)
    assert image.size == size and image_size(path) == size
    assert np.abs(np.subtract(image.getpixel(red_corner), RED)).max() <= 12
    assert np.abs(np.subtract(image.getpixel(blue_corner), BLUE)).max() <= 12


# ---------------------------------------------------------------- modes


RED_GREEN = strip("P", [0, 1], palette=[*RED, *GREEN])
MODE_CASES = {  # id: (bytes, expected RGB of the first row, tolerance)
    "palette": (encode(RED_GREEN, "PNG"), [RED, GREEN], 0),
    "palette-transparent-png": (encode(RED_GREEN, "PNG", transparency=0), [WHITE, GREEN], 0),
    "palette-transparent-gif": (encode(RED_GREEN, "GIF", transparency=0), [WHITE, GREEN], 0),
    "rgba-clear-half-red": (encode(strip("RGBA", [(0, 0, 0, 0), (255, 0, 0, 128), BLUE]), "PNG"),
                            [WHITE, (255, 127, 127), BLUE], 1),
    "la": (encode(strip("LA", [(0, 0), (100, 255)]), "PNG"), [WHITE, *grey(100)], 0),
    "l-key": (encode(strip("L", [0, 200]), "PNG", transparency=0), [WHITE, *grey(200)], 0),
    "rgb-key": (encode(strip("RGB", [(0, 0, 0), (9, 9, 9)]), "PNG", transparency=(0, 0, 0)), [WHITE, *grey(9)], 0),
    "cmyk-jpeg": (encode(strip("CMYK", [(0, 255, 255, 0), (0, 0, 0, 0)]), "JPEG", quality=100), [RED, WHITE], 8),
    "cmyk-tiff": (encode(strip("CMYK", [(0, 255, 255, 0), (0, 0, 0, 255)]), "TIFF"), [RED, (0, 0, 0)], 0),
    "i16-png": (encode(array([65535, 32768, 0], np.uint16), "PNG"), grey(255, 128, 0), 0),
    "i32-8bit-range": (encode(array([0, 100, 255], np.int32), "TIFF"), grey(0, 100, 255), 0),
    "i32-16bit-range": (encode(array([65535, 32768, 0], np.int32), "TIFF"), grey(255, 128, 0), 0),
    "float-unit-range": (encode(array([0.0, 0.5, 1.0], np.float32), "TIFF"), grey(0, 128, 255), 0),
    "float-byte-range": (encode(array([0.0, 100.0, 300.0], np.float32), "TIFF"), grey(0, 100, 255), 0),
    "grey-l": (encode(strip("L", [0, 77, 255]), "PNG"), grey(0, 77, 255), 0),
    "bilevel-1": (encode(strip("1", [0, 1]), "PNG"), grey(0, 255), 0),
    "bilevel-bmp": (encode(strip("1", [1, 0]), "BMP"), grey(255, 0), 0),
}


@pytest.mark.parametrize("case", MODE_CASES)
def test_modes_convert_to_rgb_with_correct_values(case):
    data, expected, tolerance = MODE_CASES[case]
    image = load_image(data)
    row = np.asarray(image, dtype=int)[0]
    assert image.mode == "RGB" and np.abs(row - np.array(expected)).max() <= tolerance, row


def test_pil_images_are_converted_and_lazy_broken_ones_raise_typed_errors():
    image = load_image(Image.new("RGBA", (3, 2), (0, 0, 0, 0)))
    assert image.mode == "RGB" and image.getpixel((2, 1)) == WHITE
    lazy = Image.open(io.BytesIO(half(encode(noise(), "JPEG"))))
    with pytest.raises(ImageLoadError) as info:
        load_image(lazy)
    assert info.value.source == "<PIL image>" and "truncated" in info.value.reason


# ---------------------------------------------------------------- errors for single bad inputs


def load_error(source, **options) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **options)
    return info.value


def test_missing_directory_and_empty_sources_name_the_problem(tmp_path):
    missing = tmp_path / "nope.jpg"
    error = load_error(missing)
    assert error.source == str(missing) and error.reason == "no such file"
    assert str(error) == f"{missing}: no such file"
    assert "directory" in load_error(tmp_path).reason
    empty = tmp_path / "empty.png"
    empty.touch()
    assert load_error(empty).reason == "empty file"
    error = load_error(b"")
    assert error.source == "<0 bytes>" and "empty" in error.reason


def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(encode(quadrants(), "PNG"))
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads it anyway
        assert load_image(path).mode == "RGB"
    else:
        assert load_error(path).reason == "permission denied"
    path.chmod(0o644)


def test_decompression_bomb_limit_from_argument_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(encode(Image.new("RGB", (100, 100)), "PNG"))
    error = load_error(path, pixel_limit=5_000)
    assert error.source == str(path)
    assert "decompression bomb" in error.reason and "100x100" in error.reason and "CLIPLENS_MAX_PIXELS" in error.reason
    assert load_image(path, pixel_limit=10_000).size == (100, 100)
    monkeypatch.delenv("CLIPLENS_MAX_PIXELS", raising=False)
    assert max_pixels() == DEFAULT_MAX_PIXELS
    monkeypatch.setenv("CLIPLENS_MAX_PIXELS", "5000")
    assert max_pixels() == 5_000
    assert "decompression bomb" in load_error(path).reason
    assert load_image(path, pixel_limit=20_000).size == (100, 100)  # the argument wins
    monkeypatch.setenv("CLIPLENS_MAX_PIXELS", "lots")
    with pytest.raises(UsageError, match="CLIPLENS_MAX_PIXELS"):
        load_image(path)


def test_raised_limit_is_not_overruled_by_pillows_own_guard(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow errors over twice this
    assert load_image(encode(Image.new("RGB", (100, 100)), "PNG"), pixel_limit=1_000_000).size == (100, 100)


def test_loading_leaves_pillows_process_wide_settings_alone():
    """Our pixel limit is per call: Pillow's global limit and the warning filters are as they were, and an image
    between Pillow's limit (89M pixels) and ours (150M) raises no DecompressionBombWarning."""
    import warnings

    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    between = png_claiming_size(10_000, 9_500)  # 95M pixels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert image_size(between) == (10_000, 9_500)
        with pytest.raises(ImageLoadError, match="truncated"):  # header only: the size passes, the pixels are missing
            load_image(between)
        with pytest.raises(ImageLoadError, match="decompression bomb"):
            load_image(between, pixel_limit=1_000_000)
        load_image(encode(noise(), "PNG"))
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert Image.MAX_IMAGE_PIXELS == limit and warnings.filters == filters


def test_image_size_reads_headers_and_reports_bad_files():
    assert image_size(encode(Image.new("RGB", (300, 200)), "PNG")) == (300, 200)
    assert image_size(png_claiming_size(9_000, 7_000)) == (9_000, 7_000)  # header only, nothing decoded
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        image_size(png_claiming_size(100_000, 100_000))
    with pytest.raises(ImageLoadError) as info:
        image_size(b"hello")
    assert info.value.reason == "not an image (unknown or unsupported format)"


GOOD = [name for name, _, expected in CORPUS if expected == "ok"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    folder = tmp_path_factory.mktemp("corpus")
    files = {}
    for name, build, expected in CORPUS:
        (folder / name).write_bytes(build())
        files[name] = (folder / name, expected)
    return files


def test_corpus_is_large_and_mixed():
    assert len(CORPUS) >= 30 and len({name for name, _, _ in CORPUS}) == len(CORPUS)
    assert 15 <= len(GOOD) <= len(CORPUS) - 15


@pytest.mark.parametrize("name", [name for name, _, _ in CORPUS])
def test_corpus_file(corpus, name):
    path, expected = corpus[name]
    if expected == "ok":
        image = load_image(path)
        assert image.mode == "RGB" and image.width > 0 and image.height > 0
    else:
        error = load_error(path)
        assert error.source == str(path)
        assert expected.lower() in error.reason.lower(), error.reason


def test_iter_loaded_over_the_whole_corpus(corpus):
    paths = [path for path, _ in corpus.values()]
    results = list(iter_loaded(paths))
    assert [source for source, _ in results] == paths
    loaded, failed = [], []
    for (source, outcome), (_, expected) in zip(results, corpus.values()):
        if expected == "ok":
            assert isinstance(outcome, Image.Image) and outcome.mode == "RGB", (source, outcome)
            loaded.append(source)
        else:
            assert isinstance(outcome, ImageLoadError), (source, outcome)
            assert outcome.source == str(source) and expected.lower() in outcome.reason.lower(), outcome
            failed.append(source)
    assert len(loaded) == len(GOOD) and len(failed) == len(CORPUS) - len(GOOD)


def test_corpus_loads_to_the_end_with_drafts_and_bytes(corpus):
    """Nothing hangs or escapes: every file gives an image or a typed error, also as bytes and in draft mode."""
    sources = [path for path, _ in corpus.values()] + [path.read_bytes() for path, _ in corpus.values()]
    outcomes = [outcome for _, outcome in iter_loaded(sources, draft_size=16)]
    assert len(outcomes) == 2 * len(CORPUS)
    assert sum(isinstance(o, Image.Image) for o in outcomes) == 2 * len(GOOD)
    assert all(isinstance(o, (Image.Image, ImageLoadError)) for o in outcomes)


# ---------------------------------------------------------------- expand_paths


@pytest.fixture
def tree(tmp_path) -> Path:
    for name in ("a.jpg", "b.PNG", "notes.txt", "sub/c.webp", "sub/readme.md", "sub/deep/d.tiff", "sub/deep/e.heic"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def names(paths) -> set[str]:
    return {path.name for path in paths}


def test_folders_are_walked_for_image_extensions_only(tree):
    found = expand_paths([tree])
    assert names(found) == {"a.jpg", "b.PNG", "c.webp", "d.tiff", "e.heic"}
    assert all(isinstance(path, Path) and path.is_file() for path in found)
    assert names(expand_paths([tree], recursive=False)) == {"a.jpg", "b.PNG"}


def test_explicit_files_are_kept_whatever_their_extension_once_and_must_exist(tree):
    found = expand_paths([tree / "notes.txt", tree / "a.jpg", tree, str(tree / "a.jpg")])
    assert [p.name for p in found].count("a.jpg") == 1
    assert found[:2] == [tree / "notes.txt", tree / "a.jpg"]
    assert "notes.txt" in names(found) and "readme.md" not in names(found)
    with pytest.raises(UsageError, match="nope.jpg"):  # a missing path is the caller's mistake
        expand_paths([tree / "a.jpg", tree / "nope.jpg"])


def test_globs_and_excludes(tree):
    assert names(expand_paths([str(tree / "sub" / "*.webp")])) == {"c.webp"}
    assert names(expand_paths([str(tree / "**" / "*.tiff")])) == {"d.tiff"}
    assert names(expand_paths([str(tree / "sub" / "*")])) == {"c.webp", "readme.md"}  # folders are not files
    assert names(expand_paths([tree], exclude=["*/deep/*"])) == {"a.jpg", "b.PNG", "c.webp"}
    assert names(expand_paths([tree], exclude=["a.jpg", "*.heic"])) == {"b.PNG", "c.webp", "d.tiff"}
    assert expand_paths([tree / "notes.txt"], exclude=["*.txt"]) == []


# ---------------------------------------------------------------- draft decoding


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory) -> Path:
    h, w = 1500, 2000
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    gradient = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1).astype(np.uint8)
    image = Image.fromarray(gradient)
    draw = ImageDraw.Draw(image)
    draw.ellipse((300, 200, 900, 800), fill=(200, 30, 60))
    draw.rectangle((1200, 600, 1800, 1300), fill=(20, 160, 90))
    draw.line((0, 1400, 2000, 100), fill=(250, 250, 0), width=25)
    path = tmp_path_factory.mktemp("draft") / "large.jpg"
    image.save(path, "JPEG", quality=90)
    return path


def test_draft_decodes_smaller_but_close_to_full(large_jpeg):
    full = load_image(large_jpeg)
    draft = load_image(large_jpeg, draft_size=448)
    assert full.size == (2000, 1500)
    assert draft.mode == "RGB" and draft.width < full.width and min(draft.size) >= 448
    small = [np.asarray(im.resize((224, 224), Image.Resampling.BICUBIC), dtype=float) for im in (full, draft)]
    assert np.abs(small[0] - small[1]).mean() < 3


def test_draft_size_leaves_other_formats_and_small_jpegs_alone():
    png = encode(Image.new("RGB", (1000, 800), GREEN), "PNG")
    assert load_image(png, draft_size=100).size == (1000, 800)
    assert load_image(encode(noise((300, 200)), "JPEG"), draft_size=448).size == (300, 200)
