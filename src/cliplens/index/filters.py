"""Which indexed photos a search may return: by date taken, camera, place and path.

Filters narrow the candidates *before* the vector search, so ``top=10`` gives 10 results whenever 10
photos pass. Dates compare the photo's own local time (what its camera's clock said), so a photo taken
at 23:30 on New Year's Eve in Sydney belongs to that year wherever the index is searched. ``after`` and
``before`` are inclusive and take a year, a month or a day: ``after="2019-06", before="2019-08"``
keeps June to August 2019.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import date
from fnmatch import fnmatchcase

import numpy as np

from ..errors import UsageError
from ..inputs.ocr import normalised, text_contains

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
EARTH_RADIUS_KM = 6371.0088
DEFAULT_WITHIN_KM = 1.0
KINDS = ("photo", "video")


def _period(value: str, parameter: str) -> tuple[str, str]:
    """The first moment of a YYYY, YYYY-MM or YYYY-MM-DD period and the first moment after it (ISO text)."""
    match = _DATE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise UsageError("not a date: give YYYY, YYYY-MM or YYYY-MM-DD", value=value, parameter=parameter)
    year, month, day = int(match.group(1)), int(match.group(2) or 1), int(match.group(3) or 1)
    try:
        start = date(year, month, day)
    except ValueError as exc:
        raise UsageError(f"not a date ({exc})", value=value, parameter=parameter) from None
    if match.group(3):
        end = date.fromordinal(start.toordinal() + 1)
    elif match.group(2):
        end = date(year + (month == 12), month % 12 + 1, 1)
    else:
        end = date(year + 1, 1, 1)
    return start.isoformat() + "T00:00:00", end.isoformat() + "T00:00:00"


def parse_position(value: str, parameter: str = "near") -> tuple[float, float]:
    """``"LAT,LON"`` in decimal degrees."""
    try:
        lat, lon = (float(part) for part in str(value).split(","))
    except ValueError:
        raise UsageError("not a place: give LAT,LON in decimal degrees (48.8584,2.2945)", value=value,
                         parameter=parameter) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise UsageError("latitude must be within ±90 and longitude within ±180", value=value, parameter=parameter)
    return lat, lon


def distance_km(lat: np.ndarray, lon: np.ndarray, at: tuple[float, float]) -> np.ndarray:
    """Great-circle distance (haversine) from ``at`` to each position."""
    lat1, lon1 = math.radians(at[0]), math.radians(at[1])
    lat2, lon2 = np.radians(np.asarray(lat, np.float64)), np.radians(np.asarray(lon, np.float64))
    h = np.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


@dataclass(frozen=True)
class SearchFilter:
    """Conditions on a photo's metadata and path; an empty filter keeps everything."""

    after: str | None = None
    before: str | None = None
    camera: str | None = None  # part of the make or model, any case
    near: tuple[float, float] | None = None
    within_km: float | None = None
    path: str | None = None  # a glob on the file's path ("*/2019/*", "*beach*")
    kind: str | None = None  # "photo" or "video"
    text: str | None = None  # words written in the photo, as OCR read them (``index --ocr``): any case and spacing

    def __post_init__(self):
        if self.after is not None:
            _period(self.after, "after")
        if self.before is not None:
            _period(self.before, "before")
        if self.kind is not None and self.kind not in KINDS:
            raise UsageError(f"must be one of {', '.join(KINDS)}", value=self.kind, parameter="kind")
        if self.within_km is not None and self.near is None:
            raise UsageError("a distance needs a place to be near", value=self.within_km, parameter="within_km")
        if self.within_km is not None and not self.within_km > 0:
            raise UsageError("must be above 0 km", value=self.within_km, parameter="within_km")
        if self.after is not None and self.before is not None and \
                _period(self.after, "after")[0] >= _period(self.before, "before")[1]:
            raise UsageError(f"nothing is taken after {self.after} and before {self.before}", value=self.after,
                             parameter="after")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.after, self.before, self.camera, self.near, self.path, self.kind,
                                           self.text))

    def sql(self) -> tuple[list[str], list]:
        """SQL conditions on the files table (and their parameters) for what SQL can judge."""
        conditions, params = [], []
        if self.kind is not None:
            conditions.append("kind = 'video'" if self.kind == "video" else "kind IS NULL")
        if self.after is not None:
            # ISO text compares as the time it names: "2019-12-31T23:30:00-05:00" < "2020-01-01T00:00:00" (the
            # photo's own local time; the offset after it only breaks ties), so the date index serves the range
            conditions.append("taken >= ?")
            params.append(_period(self.after, "after")[0])
        if self.before is not None:
            conditions.append("taken < ?")
            params.append(_period(self.before, "before")[1])
        if self.camera is not None:
            conditions.append("lower(coalesce(camera_make, '') || ' ' || coalesce(camera_model, '')) LIKE ? "
                              "ESCAPE '\\'")
            needle = self.camera.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{needle}%")
        if self.near is not None:  # a box around the place first; the exact distance is judged after
            reach = self.within_km if self.within_km is not None else DEFAULT_WITHIN_KM
            dlat = math.degrees(reach / EARTH_RADIUS_KM)
            conditions.append("lat BETWEEN ? AND ?")
            params += [self.near[0] - dlat, self.near[0] + dlat]
            if abs(self.near[0]) + dlat < 89:
                dlon = math.degrees(reach / (EARTH_RADIUS_KM * math.cos(math.radians(abs(self.near[0]) + dlat))))
                if dlon < 180:
                    low, high = self.near[1] - dlon, self.near[1] + dlon
                    if low < -180 or high > 180:  # the box crosses the antimeridian
                        conditions.append("(lon >= ? OR lon <= ?)")
                        params += [(low + 540) % 360 - 180, (high + 540) % 360 - 180]
                    else:
                        conditions.append("lon BETWEEN ? AND ?")
                        params += [low, high]
        return conditions, params

    @property
    def judged_by_row(self) -> bool:
        """Whether some conditions are judged on each row's path or place, after SQL."""
        return self.near is not None or self.path is not None

    def text_matches(self, store) -> dict[int, str]:
        """The ids whose text (read by OCR) contains :attr:`text`, forgiving the spaces OCR drops and a misread
        letter in six, with that text."""
        needle = normalised(self.text or "")
        return {i: text for i, text in store.text_candidates(needle) if text_contains(needle, text)}

    def select(self, store, *, newest_first: bool = False) -> np.ndarray:
        """The ids of ``store`` (an :class:`~cliplens.index.store.IndexStore`) that pass, newest first if asked
        (then only rows with a vector; else possibly rows without one, which a vector search drops)."""
        if self.text is not None:
            if not normalised(self.text):
                raise UsageError("give words with letters or digits", value=self.text, parameter="text")
            matched = self.text_matches(store)
            others = replace(self, text=None)
            if not others.active:
                ids = np.fromiter(matched, np.int64, len(matched))
                return store.newest_first(ids) if newest_first else ids
            ids = others.select(store, newest_first=newest_first)
            return ids[np.isin(ids, np.fromiter(matched, np.int64, len(matched)))]
        conditions, params = self.sql()
        rows = store.filtered_ids(conditions, params, described=self.judged_by_row, newest_first=newest_first)
        if self.judged_by_row:
            return self.keep(rows)
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def keep(self, rows: list[tuple]) -> np.ndarray:
        """Of (id, path, taken, lat, lon) rows that passed :meth:`sql`, the ids that pass the rest."""
        if not rows:
            return np.zeros(0, np.int64)
        keep = np.ones(len(rows), dtype=bool)
        if self.near is not None:
            reach = self.within_km if self.within_km is not None else DEFAULT_WITHIN_KM
            keep &= distance_km([r[3] for r in rows], [r[4] for r in rows], self.near) <= reach
        if self.path is not None:
            keep &= np.array([fnmatchcase(r[1], self.path) for r in rows])
        return np.array([r[0] for r in rows], np.int64)[keep]
