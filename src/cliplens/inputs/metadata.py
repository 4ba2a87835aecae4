"""What a photo's file says about it: when it was taken, with which camera, where, and how it is turned.

Read once per file while indexing, from the bytes the indexer reads anyway, through Pillow's EXIF
support (JPEG, PNG, WebP, TIFF and, with the heif extra, HEIC/AVIF). Only the header is parsed: no
pixels are decoded. The date is EXIF's DateTimeOriginal (else DateTimeDigitized, else DateTime) with
its OffsetTimeOriginal when the camera wrote one; a photo without one is dated by the file's
modification time, and ``taken_source`` says which ("exif" or "file"). A damaged or missing EXIF
block is not an error: the photo is simply not described by it.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO

from PIL import ExifTags, Image

# a damaged EXIF block is not the user's concern here (the photo is simply not described by it); Pillow
# would warn once per such file from the decode threads, where warning filters cannot be set per call
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning, module=r"PIL\.")

_EXIF_DATE = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")
_DATE_TAGS = ((ExifTags.Base.DateTimeOriginal, ExifTags.Base.OffsetTimeOriginal),
              (ExifTags.Base.DateTimeDigitized, ExifTags.Base.OffsetTimeDigitized),
              (ExifTags.Base.DateTime, ExifTags.Base.OffsetTime))


@dataclass(frozen=True)
class PhotoMetadata:
    """``taken``: ISO 8601 local time ("2019-07-14T16:02:11", with "+02:00" when the offset is known)."""

    taken: str | None = None
    taken_source: str | None = None  # "exif" or "file" (the file's modification time)
    camera_make: str | None = None
    camera_model: str | None = None
    lat: float | None = None
    lon: float | None = None
    orientation: int | None = None  # EXIF orientation, 1–8 (the decoder applies it)

    @property
    def camera(self) -> str | None:
        """Make and model as one name ("Canon EOS 5D"), the make left out when the model repeats it."""
        make, model = self.camera_make or "", self.camera_model or ""
        if make and model.lower().startswith(make.split()[0].lower()):
            make = ""
        return " ".join(filter(None, [make, model])) or None


def file_time(mtime_ns: int) -> str:
    """A modification time as local ISO 8601 with this machine's offset."""
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).astimezone().isoformat(timespec="seconds")


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _taken(exif, sub) -> str | None:
    for date_tag, offset_tag in _DATE_TAGS:
        value = _text(sub.get(date_tag) or exif.get(date_tag))
        match = _EXIF_DATE.match(value or "")
        if not match or match.group(1) == "0000":
            continue
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        try:
            stamp = datetime(year, month, day, hour, minute, second).isoformat()
        except ValueError:  # 2019:02:30 and the like
            continue
        offset = _text(sub.get(offset_tag) or exif.get(offset_tag))
        return stamp + (offset if offset and _OFFSET.match(offset) else "")
    return None


def _degrees(value, ref) -> float | None:
    try:
        d, m, s = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    degrees = d + m / 60 + s / 3600
    ref = _text(ref) or ""
    return -degrees if ref.upper() in ("S", "W") else degrees


def _position(gps) -> tuple[float | None, float | None]:
    lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef))
    lon = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None, None  # (0, 0) is what cameras write when they had no fix
    return round(lat, 7), round(lon, 7)


def read_metadata(data: bytes | BinaryIO, mtime_ns: int | None = None) -> PhotoMetadata:
    """The metadata of an image file's bytes (or an open binary file, read only as far as its header); dated
    by ``mtime_ns`` when its EXIF gives no date."""
    taken = source = make = model = lat = lon = orientation = None
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            exif = image.getexif()
            sub = exif.get_ifd(ExifTags.IFD.Exif)
            gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
            taken = _taken(exif, sub)
            source = "exif" if taken else None
            make, model = _text(exif.get(ExifTags.Base.Make)), _text(exif.get(ExifTags.Base.Model))
            lat, lon = _position(gps)
            value = exif.get(ExifTags.Base.Orientation)
            orientation = int(value) if isinstance(value, int) and 1 <= value <= 8 else None
    except Exception:  # noqa: BLE001 - a damaged or unknown header describes nothing; decoding reports the file
        pass
    if taken is None and mtime_ns is not None:
        taken, source = file_time(mtime_ns), "file"
    return PhotoMetadata(taken, source, make, model, lat, lon, orientation)
