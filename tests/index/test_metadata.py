"""Photo metadata in the index: dates, cameras and places read once while indexing, filters that narrow the
search before it runs, and indexes from the previous schema upgraded in place without re-encoding."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from cliplens.errors import UsageError
from cliplens.index import IndexStore, PhotoIndex, SearchFilter, update_index
from cliplens.index.filters import distance_km
from cliplens.inputs.demo_data import generate
from cliplens.inputs.metadata import read_metadata

from conftest import run_cli

PARIS, NEW_YORK = (48.8584, 2.2945), (40.6892, -74.0445)


def _exif(taken: str | None = None, offset: str | None = None, make: str | None = None, model: str | None = None,
          place: tuple[float, float] | None = None) -> Image.Exif:
    exif = Image.Exif()
    if make:
        exif[ExifTags.Base.Make] = make
    if model:
        exif[ExifTags.Base.Model] = model
    if taken:
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        sub[ExifTags.Base.DateTimeOriginal] = taken
        if offset:
            sub[ExifTags.Base.OffsetTimeOriginal] = offset
    if place:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        for value, ref, tags in ((place[0], "NS", (ExifTags.GPS.GPSLatitude, ExifTags.GPS.GPSLatitudeRef)),
                                 (place[1], "EW", (ExifTags.GPS.GPSLongitude, ExifTags.GPS.GPSLongitudeRef))):
            whole = abs(value)
            degrees, minutes = int(whole), int(whole * 60) % 60
            gps[tags[0]] = (float(degrees), float(minutes), round((whole * 3600) % 60, 4))
            gps[tags[1]] = ref[value < 0]
    return exif


# name, shape scene seed, taken, offset, make, model, place
PHOTOS = [
    ("2018/paris-a.jpg", "2018:03:10 09:00:00", None, "Canon", "Canon EOS 5D Mark IV", PARIS),
    ("2019/paris-b.jpg", "2019:07:14 16:02:11", "+02:00", "Canon", "Canon EOS R6", PARIS),
    ("2019/nyc.jpg", "2019:12:31 23:30:00", "-05:00", "NIKON CORPORATION", "NIKON D750", NEW_YORK),
    ("2020/phone.jpg", "2020:01:01 08:15:00", "+10:00", "Apple", "iPhone 12", None),
    ("undated/scan.jpg", None, None, None, None, None),
]
SCAN_MTIME = 1_625_000_000  # 2021-06-29 (UTC): the scan is dated by its file


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    scenes = iter(generate(40, seed=97, size=128))
    for name, taken, offset, make, model, place in PHOTOS:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        next(scenes).image.save(path, "JPEG", quality=92, exif=_exif(taken, offset, make, model, place))
    os.utime(folder / "undated/scan.jpg", (SCAN_MTIME, SCAN_MTIME))
    (folder / "burst").mkdir()
    for i in range(14):  # a burst from one Nikon, for "top results when that many pass"
        next(scenes).image.save(folder / f"burst/{i:02d}.jpg", "JPEG",
                                exif=_exif(f"2021:05:0{1 + i // 7} 10:{i:02d}:00", None, "NIKON CORPORATION", "Z 6"))
    index = tmp_path_factory.mktemp("library-index")
    run = update_index([folder], index, "demo", backend="torch")
    assert run.encoded == len(PHOTOS) + 14 and run.failed == 0
    return folder, index


def _names(result, folder: Path) -> list[str]:
    return [str(Path(h.path).relative_to(folder)) for h in result.hits]


def test_metadata_is_read_from_the_header():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "JPEG", exif=_exif("2019:07:14 16:02:11", "+02:00", "Canon",
                                                               "Canon EOS R6", PARIS))
    meta = read_metadata(buffer.getvalue(), 0)
    assert (meta.taken, meta.taken_source, meta.camera) == ("2019-07-14T16:02:11+02:00", "exif", "Canon EOS R6")
    assert abs(meta.lat - PARIS[0]) < 1e-3 and abs(meta.lon - PARIS[1]) < 1e-3
    no_fix = io.BytesIO()  # (0, 0) is what a camera without a fix writes: no place
    Image.new("RGB", (8, 8)).save(no_fix, "JPEG", exif=_exif(make="Sony", model="ILCE-7M3", place=(0.0, 0.0)))
    assert read_metadata(no_fix.getvalue(), 0).lat is None
    for damaged in (b"", b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*garbage", buffer.getvalue()[:200]):
        dated = read_metadata(damaged, SCAN_MTIME * 10**9)
        assert dated.taken_source == "file" and dated.taken.startswith("2021-06-")


def test_each_filter_and_their_combinations_return_exactly_the_right_files(library):
    folder, index = library
    photos = PhotoIndex(index)
    try:
        def only(**fields) -> list[str]:
            return _names(photos.search(filters=SearchFilter(**fields), top=100), folder)

        dated = ["undated/scan.jpg", "2020/phone.jpg", "2019/nyc.jpg", "2019/paris-b.jpg", "2018/paris-a.jpg"]
        assert [n for n in only(after="2018") if not n.startswith("burst/")] == dated  # newest first
        assert only(after="2019", before="2019") == ["2019/nyc.jpg", "2019/paris-b.jpg"]  # the camera's own clock
        assert only(after="2019-12-31", before="2020-01") == ["2020/phone.jpg", "2019/nyc.jpg"]
        assert only(before="2019-07-13") == ["2018/paris-a.jpg"]
        assert only(after="2021-06", before="2021-06") == ["undated/scan.jpg"]  # dated by its file
        assert sorted(only(camera="canon")) == ["2018/paris-a.jpg", "2019/paris-b.jpg"]
        assert only(camera="iphone") == ["2020/phone.jpg"] and only(camera="leica") == []
        assert sorted(only(near=PARIS, within_km=5)) == ["2018/paris-a.jpg", "2019/paris-b.jpg"]
        assert only(near=(48.86, 2.35), within_km=2) == [] and len(only(near=(48.86, 2.35), within_km=6)) == 2
        assert only(near=NEW_YORK) == ["2019/nyc.jpg"]
        assert only(path="*/2019/*") == ["2019/nyc.jpg", "2019/paris-b.jpg"]
        assert only(camera="nikon", after="2019", before="2020") == ["2019/nyc.jpg"]
        assert only(near=PARIS, within_km=5, after="2019") == ["2019/paris-b.jpg"]
        assert len(only(camera="z 6")) == 14 and len(only(camera="NIKON")) == 15
    finally:
        photos.close()


@pytest.mark.parametrize("exact_up_to", [20_000, 0])  # from the store's vectors, and in the vector index
def test_filters_narrow_the_search_before_it_runs(library, exact_up_to, monkeypatch):
    monkeypatch.setattr("cliplens.index.photos.EXACT_FILTERED", exact_up_to)
    folder, index = library
    photos = PhotoIndex(index)
    try:
        burst = photos.search("a red circle", top=10, filters=SearchFilter(camera="z 6"))
        assert len(burst.hits) == 10 and all(n.startswith("burst/") for n in _names(burst, folder))
        narrowed = photos.search("a red circle", top=3, filters=SearchFilter(after="2018", before="2019"))
        assert len(narrowed.hits) == 3 and set(_names(narrowed, folder)) <= {"2018/paris-a.jpg", "2019/paris-b.jpg",
                                                                            "2019/nyc.jpg"}
        hit = photos.search("a red circle", top=1, filters=SearchFilter(near=NEW_YORK)).to_dict()["results"][0]
        assert hit["camera"] == "NIKON D750" and hit["taken"] == "2019-12-31T23:30:00-05:00"
        assert abs(hit["lat"] - NEW_YORK[0]) < 1e-3 and hit["taken_source"] == "exif"
        assert photos.search(filters=SearchFilter(camera="leica"), top=5).hits == []
    finally:
        photos.close()


def test_filter_values_are_checked_and_named():
    for fields, parameter in (({"after": "2019-13"}, "after"), ({"before": "last year"}, "before"),
                              ({"within_km": 3}, "within_km"), ({"near": PARIS, "within_km": -1}, "within_km"),
                              ({"after": "2020", "before": "2019"}, "after")):
        with pytest.raises(UsageError) as caught:
            SearchFilter(**fields)
        assert caught.value.parameter == parameter
    assert distance_km([NEW_YORK[0]], [NEW_YORK[1]], PARIS)[0] == pytest.approx(5837, rel=0.01)
    # a box across the antimeridian still finds what is near
    across = SearchFilter(near=(-16.5, 179.9), within_km=50)
    conditions, params = across.sql()
    assert any("OR" in c for c in conditions)


def test_an_index_from_the_previous_schema_upgrades_in_place_without_re_encoding(library, tmp_path):
    folder, index = library
    old = tmp_path / "old-index"
    old.mkdir()
    with sqlite3.connect(index / "index.sqlite") as source, sqlite3.connect(old / "index.sqlite") as copy:
        source.backup(copy)
    with sqlite3.connect(old / "index.sqlite") as db:  # what schema 2 held: no metadata columns, no videos
        db.execute("DROP INDEX files_parent")
        db.execute("DROP INDEX files_taken")
        for column in ("taken", "taken_source", "camera_make", "camera_model", "lat", "lon", "orientation", "kind",
                       "parent", "time", "until"):
            db.execute(f"ALTER TABLE files DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    store = IndexStore(old)
    assert store.meta("schema") == "4" and len(store.undescribed()) == len(PHOTOS) + 14
    store.close()
    run = update_index([folder], old, "demo", backend="torch")
    assert run.encoded == 0 and run.unchanged == len(PHOTOS) + 14  # headers read, nothing decoded or encoded
    store = IndexStore(old)
    try:
        assert store.undescribed() == []
    finally:
        store.close()
    photos = PhotoIndex(old)
    try:
        assert _names(photos.search(filters=SearchFilter(camera="canon eos r6"), top=5), folder) == ["2019/paris-b.jpg"]
    finally:
        photos.close()
    with sqlite3.connect(old / "index.sqlite") as db:
        db.execute("UPDATE meta SET value = '5' WHERE key = 'schema'")
    with pytest.raises(UsageError, match="newer cliplens"):
        IndexStore(old)


def test_cli_filters_alone_and_with_a_query(library):
    folder, index = library
    proc = run_cli("search", "--camera", "canon", "--after", "2019", "--index", index, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["score_kind"] == "none" and [Path(r["path"]).name for r in data["results"]] == ["paris-b.jpg"]
    row = data["results"][0]
    assert row["taken"] == "2019-07-14T16:02:11+02:00" and row["camera"] == "Canon EOS R6" and row["lat"]
    proc = run_cli("search", "a red circle", "--near", f"{PARIS[0]},{PARIS[1]}", "--within", "5", "-k", "5",
                   "--index", index)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2 and "2018-03-10 09:00" in proc.stdout
    proc = run_cli("search", "a red circle", "--after", "2019-02-30", "--index", index)
    assert proc.returncode == 2 and "--after" in proc.stderr and "2019-02-30" in proc.stderr
    proc = run_cli("search", "--within", "3", "--index", index)
    assert proc.returncode == 2 and "--within" in proc.stderr
    proc = run_cli("search", "--near", "north pole", "--index", index)
    assert proc.returncode == 2 and "--near" in proc.stderr and "LAT,LON" in proc.stderr
