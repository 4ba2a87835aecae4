"""Camera RAW files: recognised by their bytes, decoded from the embedded preview or a demosaic, upright, and a
damaged or undecodable one is a bad file with a reason (the extra to install when rawpy is missing)."""

from __future__ import annotations

import io
import random
import sys

import pytest
from PIL import Image, ImageDraw

from cliplens.errors import ImageLoadError
from cliplens.inputs.demo_data import ShapeScene, render_scene
from cliplens.inputs.images import expand_paths, image_size, load_image
from cliplens.inputs.raw import raw_format

from media_files import write_dng

BLUE, RED = (40, 80, 200), (220, 30, 30)


def _picture(size=(400, 300)) -> Image.Image:
    image = Image.new("RGB", size, BLUE)
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 5, 3 * size[0] // 4, 4 * size[1] // 5), fill=RED)
    return image


def _near(pixel, colour, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def test_a_dng_without_preview_is_demosaiced_at_half_size_in_its_colours(tmp_path):
    path = write_dng(tmp_path / "shot.dng", _picture())
    image = load_image(path)
    assert image.size == (200, 150) and image.mode == "RGB"
    assert _near(image.getpixel((100, 75)), RED) and _near(image.getpixel((4, 4)), BLUE)
    assert image_size(path) == (400, 300)  # the sensor's picture, from the header


def test_the_embedded_preview_is_used_when_large_enough(tmp_path):
    preview = _picture((1400, 1050))
    ImageDraw.Draw(preview).rectangle((0, 0, 40, 40), fill=(0, 255, 0))  # a mark only the preview has
    path = write_dng(tmp_path / "shot.dng", _picture(), preview=preview)
    image = load_image(path)
    assert image.size == (1400, 1050) and _near(image.getpixel((10, 10)), (0, 255, 0), 5)
    small = load_image(path, draft_size=2000)  # the preview is too small for that: demosaic
    assert small.size == (200, 150) and _near(small.getpixel((4, 4)), BLUE)


@pytest.mark.parametrize("with_preview", [False, True])
def test_the_camera_orientation_is_applied(tmp_path, with_preview):
    preview = _picture((1400, 1050)) if with_preview else None
    path = write_dng(tmp_path / "turned.dng", _picture(), preview=preview, orientation=6)
    image = load_image(path)
    assert image.size == ((1050, 1400) if with_preview else (150, 200))
    assert image_size(path) == (300, 400)


def test_raw_files_are_recognised_by_their_bytes_not_only_their_name(tmp_path):
    path = write_dng(tmp_path / "renamed.tif", _picture())
    assert raw_format(path.read_bytes()) == "DNG"
    assert load_image(path.read_bytes()).size == (200, 150)  # not Pillow's reading of the TIFF
    plain = io.BytesIO()
    _picture().save(plain, "TIFF")
    assert raw_format(plain.getvalue()) is None
    assert raw_format(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01") == "CR3"
    assert raw_format(b"FUJIFILMCCD-RAW 0201") == "RAF"
    for name in ("a.CR2", "b.nef", "c.ARW", "d.raf", "e.orf", "f.rw2", "g.dng", "h.cr3"):
        (tmp_path / name).write_bytes(b"x")
    found = {p.name for p in expand_paths([tmp_path])}
    assert {"a.CR2", "b.nef", "c.ARW", "d.raf", "e.orf", "f.rw2", "g.dng", "h.cr3"} <= found


def test_a_truncated_raw_file_is_a_bad_file_with_a_reason(tmp_path):
    data = write_dng(tmp_path / "whole.dng", _picture()).read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageLoadError, match="truncated or corrupt RAW file"):
        load_image(cut)


def test_without_rawpy_the_reason_names_the_extra(tmp_path, monkeypatch):
    path = write_dng(tmp_path / "shot.dng", _picture())
    monkeypatch.setitem(sys.modules, "rawpy", None)  # as if the extra were not installed
    with pytest.raises(ImageLoadError, match=r"DNG camera RAW file needs the raw extra: pip install 'cliplens\[raw\]'"):
        load_image(path)


def test_a_demo_scene_survives_the_raw_round_trip(tmp_path):
    scene = ShapeScene(shape="circle", colour="red", count=1, size="large", background="white")
    picture = render_scene(scene, random.Random(0), 256)
    image = load_image(write_dng(tmp_path / "scene.dng", picture))
    centre = image.resize((256, 256)).getpixel((128, 128))
    assert _near(centre, picture.getpixel((128, 128)), 60)
