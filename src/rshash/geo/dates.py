"""When a raster was acquired: an instant or an interval, from the user, the file name or (when asked) a TIFF tag.

Times are stored as ISO 8601 UTC strings of one format (``YYYY-MM-DDTHH:MM:SSZ``), so they compare as text in
SQLite. An acquisition is ``(start, end)``: ``end`` None for an instant. Text accepted (:func:`parse_time`):

* ``2020-04-15T10:30:00Z`` (or an offset, converted to UTC): that instant;
* ``2020-04-15`` or ``20200415``: that day (an instant at 00:00 UTC);
* ``2020-04``: that month, ``2020``: that year (intervals);
* ``START/END`` with either side ``..`` (open) where the caller allows it: an interval (STAC's ``datetime``).

From a file name (:func:`time_from_name`): one ``YYYYMMDD`` or ``YYYY-MM-DD`` date (a valid day between 1900 and
2100, not part of a longer run of digits), else one bare year (an interval); none or several different ones:
unknown. A TIFF's ``TIFFTAG_DATETIME`` is usually when the file was processed, so it is read only when asked.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ISO = "%Y-%m-%dT%H:%M:%SZ"
#: How ``rshash index --datetime`` may say where dates come from, besides a time or interval.
SOURCES = ("auto", "tiff", "none")
_YEARS = range(1900, 2101)
_DAY = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")


@dataclass(frozen=True)
class Acquired:
    """An acquisition time: ``start`` (ISO UTC) and ``end`` (None: an instant); ``source`` says where it came
    from ("given", "file name", "tiff tag")."""

    start: str
    end: str | None = None
    source: str = "given"

    def to_dict(self) -> dict:
        return {"datetime": self.start, "datetime_end": self.end, "datetime_source": self.source}


def iso_utc(dt: datetime) -> str:
    """A datetime as the stored ISO UTC text (a naive one is taken as UTC)."""
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).strftime(ISO)


_fmt = iso_utc


def _day(year: int, month: int, day: int) -> datetime | None:
    if year not in _YEARS or not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return datetime(year, month, day, tzinfo=timezone.utc)


def _one(text: str, whole_day: bool = False) -> tuple[str, str | None]:
    """One time as ``(start, end)``: an instant (end None) or the interval a year or month spans (a day too
    with ``whole_day``: a filter by day)."""
    t = text.strip()
    if re.fullmatch(r"\d{4}", t) and int(t) in _YEARS:
        y = int(t)
        return _fmt(datetime(y, 1, 1, tzinfo=timezone.utc)), _fmt(datetime(y, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
    m = re.fullmatch(r"(\d{4})-(\d{2})", t)
    if m and _day(int(m[1]), int(m[2]), 1):
        y, mo = int(m[1]), int(m[2])
        last = calendar.monthrange(y, mo)[1]
        return _fmt(datetime(y, mo, 1, tzinfo=timezone.utc)), _fmt(datetime(y, mo, last, 23, 59, 59, tzinfo=timezone.utc))
    m = re.fullmatch(r"(\d{4})-?(\d{2})-?(\d{2})", t)
    if m:
        day = _day(int(m[1]), int(m[2]), int(m[3]))
        if day is None:
            raise ValueError(f"not a date: {text!r}")
        return _fmt(day), (_fmt(day + timedelta(days=1) - timedelta(seconds=1)) if whole_day else None)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (give YYYY, YYYY-MM, YYYY-MM-DD, YYYYMMDD, an ISO 8601 date-time, "
                         "or START/END)") from None
    if dt.year not in _YEARS:
        raise ValueError(f"year out of range 1900-2100: {text!r}")
    return _fmt(dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)), None


def parse_time(text: str, *, open_ends: bool = False) -> tuple[str | None, str | None]:
    """``(start, end)`` of a time or ``START/END`` interval (see the module); ``end`` None for an instant.

    ``open_ends``: ``..`` or an empty side means unbounded (a filter), returned as None on that side. An
    interval whose end is before its start is refused."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty time")
    if "/" not in text:
        return _one(text)
    left, _, right = text.partition("/")
    sides = []
    for side, at_end in ((left, False), (right, True)):
        if side.strip() in ("", ".."):
            if not open_ends:
                raise ValueError(f"an open interval is not an acquisition time: {text!r}")
            sides.append(None)
        else:
            start, end = _one(side)
            sides.append(end if at_end and end is not None else start)
    if sides[0] is not None and sides[1] is not None and sides[1] < sides[0]:
        raise ValueError(f"interval ends before it starts: {text!r}")
    if sides[0] is None and sides[1] is None:
        raise ValueError(f"an interval needs at least one end: {text!r}")
    return sides[0], sides[1]


def parse_range(text: str) -> tuple[str | None, str | None]:
    """A date filter ``(lo, hi)`` (None: open): one time means all of it (a year, a month, a day, or an instant),
    ``START/END`` an interval with ``..`` or nothing for an open side (STAC's ``datetime`` parameter)."""
    if isinstance(text, str) and "/" not in text and text.strip():
        start, end = _one(text, whole_day=True)
        return start, end or start
    return parse_time(text, open_ends=True)


def time_from_name(name: str | Path) -> Acquired | None:
    """The acquisition time a file name states (see the module), or None."""
    stem = Path(name).name
    days = {d for d in (_day(int(m[1]), int(m[2]), int(m[3])) for m in _DAY.finditer(stem)) if d is not None}
    if len(days) == 1:
        return Acquired(_fmt(days.pop()), None, "file name")
    if days:
        return None  # several dates: which one is the acquisition is not knowable
    years = {int(m[1]) for m in _YEAR.finditer(stem) if int(m[1]) in _YEARS}
    if len(years) == 1:
        start, end = _one(str(years.pop()))
        return Acquired(start, end, "file name")
    return None


def time_from_tiff(tags: dict) -> Acquired | None:
    """The ``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``) of a raster's tags, or None when absent or malformed."""
    value = tags.get("TIFFTAG_DATETIME")
    if not value:
        return None
    try:
        dt = datetime.strptime(str(value).strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return Acquired(_fmt(dt), None, "tiff tag") if dt.year in _YEARS else None


def acquisition(path: str | Path, datetime_option: str | None, tags: dict | None = None) -> Acquired | None:
    """The acquisition time of one raster for ``rshash index --datetime``: ``auto``/None (the file name),
    ``tiff`` (its TIFF date-time tag, else the file name), ``none`` (unknown), or a time/interval for every
    raster (see :func:`parse_time`)."""
    option = "auto" if datetime_option is None else datetime_option
    if option == "none":
        return None
    if option == "tiff":
        return time_from_tiff(tags or {}) or time_from_name(path)
    if option == "auto":
        return time_from_name(path)
    start, end = parse_time(option)
    return Acquired(start, end, "given")


def check_datetime_option(option: str | None) -> str | None:
    """The ``--datetime`` option checked before any raster is read (ValueError with the accepted forms)."""
    if option is None or option in SOURCES:
        return option
    parse_time(option)
    return option


def overlaps(start: str | None, end: str | None, lo: str | None, hi: str | None) -> bool:
    """Whether an acquisition ``[start, end or start]`` meets the filter ``[lo, hi]`` (None: open); an unknown
    acquisition (``start`` None) meets no filter."""
    if start is None:
        return False
    last = end or start
    return (lo is None or last >= lo) and (hi is None or start <= hi)


