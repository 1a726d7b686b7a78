"""A contact's local time: its time zone, the workspace's quiet hours, a send time on its clock.

All arithmetic is done on aware datetimes converted to UTC before they are compared: Python compares
two datetimes that share a `ZoneInfo` by their wall clocks, which is wrong across a DST change.
Wall times are placed in a zone with `fold=0`: a time skipped by a spring-forward (02:30 on
2026-03-08 in New York) lands the gap's length later (03:30 EDT), a time repeated by a fall-back
takes its first occurrence.

The zone of a contact: its `timezone` attribute (an IANA name, checked at write), else the region of
its phone number (phonenumbers' time-zone data; a number whose region spans several zones — most of
the US and Canada by area code, but e.g. all of Brazil or Russia by country — takes the first zone
phonenumbers lists), else the workspace's default."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_zones

UTC = dt.UTC
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TIMEZONE_ATTRIBUTE = "timezone"
_UNKNOWN_ZONE = "Etc/Unknown"  # what phonenumbers answers for a number it cannot place
# Quiet windows can touch (start == end: a whole day): following them from one to the next stops
# after a week, which covers every combination of days.
_MAX_CHAINED_WINDOWS = 8


def zone(name: str) -> ZoneInfo:
    """The zone named `name` (an IANA name such as "Europe/Paris"); `ValueError` otherwise."""
    if not isinstance(name, str) or not name or len(name) > 64 or name != name.strip():
        raise ValueError(f"{name!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Europe/Paris)") from exc


def clock(value: str) -> dt.time:
    """ "HH:MM" (24-hour) as a time; `ValueError` otherwise."""
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        raise ValueError(f"{value!r} is not a time of day HH:MM")
    try:
        return dt.time(int(value[:2]), int(value[3:]))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a time of day HH:MM") from exc


@lru_cache(maxsize=4096)
def zone_of_number(number: str) -> str | None:
    """The first zone phonenumbers gives for an E.164 number, or None when it cannot place it."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    for name in phone_zones.time_zones_for_number(parsed):
        if name != _UNKNOWN_ZONE:
            return str(name)
    return None


def zone_name_for(attributes: Mapping[str, Any] | None, phone: str | None, default: str) -> str:
    """The contact's zone name: attribute, phone region, workspace default (see the module doc)."""
    named = (attributes or {}).get(TIMEZONE_ATTRIBUTE)
    if isinstance(named, str):
        try:
            zone(named)
            return named
        except ValueError:
            pass  # written before zones were checked: fall through rather than fail the send
    if phone and (found := zone_of_number(phone)):
        return found
    return default


def at_wall_clock(day: dt.date, time: dt.time, tz: ZoneInfo) -> dt.datetime:
    """`time` on `day` in `tz`, as a UTC instant (fold=0, see the module doc)."""
    return dt.datetime.combine(day, time, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A nightly window, e.g. 21:00-08:00. `days`: the weekdays (0 = Monday) on which a window
    starts (21:00 Friday to 08:00 Saturday is Friday's); start == end is a whole day."""

    start: dt.time
    end: dt.time
    days: frozenset[int] = frozenset(range(7))

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> QuietHours:
        days = raw.get("days") or DAYS
        return cls(clock(raw["start"]), clock(raw["end"]), frozenset(DAYS.index(d) for d in days))

    def _window(self, day: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime] | None:
        if day.weekday() not in self.days:
            return None
        end_day = day + dt.timedelta(days=1) if self.end <= self.start else day
        return at_wall_clock(day, self.start, tz), at_wall_clock(end_day, self.end, tz)

    def until(self, now: dt.datetime, tz: ZoneInfo) -> dt.datetime | None:
        """When the quiet window `now` falls in ends (UTC), or None when `now` is not quiet."""
        now = now.astimezone(UTC)
        held_until: dt.datetime | None = None
        for _ in range(_MAX_CHAINED_WINDOWS):
            today = now.astimezone(tz).date()
            # A window that started yesterday evening may still be open this morning.
            for day in (today - dt.timedelta(days=1), today):
                window = self._window(day, tz)
                if window is not None and window[0] <= now < window[1]:
                    held_until = now = window[1]
                    break
            else:
                return held_until
        return held_until


def next_local(at: dt.time, tz: ZoneInfo, *, day: dt.date | None, now: dt.datetime) -> dt.datetime:
    """The first `at` in `tz` on or after `day` (today in `tz` when None) that is not before `now`."""
    day = day or now.astimezone(tz).date()
    for offset in range(3):  # today's may have passed; a DST gap never moves it by a day
        when = at_wall_clock(day + dt.timedelta(days=offset), at, tz)
        if when >= now:
            return when
    return when  # pragma: no cover - unreachable: three days cover any clock


def send_times(
    people: Iterable[tuple[Mapping[str, Any] | None, str | None]],
    *,
    at: dt.time,
    day: dt.date | None,
    now: dt.datetime,
    default_zone: str,
) -> list[dt.datetime]:
    """Per contact (attributes, phone), the UTC instant of `at` on its own clock: computed once per
    zone, however many contacts share it."""
    by_zone: dict[str, dt.datetime] = {}
    out: list[dt.datetime] = []
    for attributes, phone in people:
        name = zone_name_for(attributes, phone, default_zone)
        if name not in by_zone:
            by_zone[name] = next_local(at, zone(name), day=day, now=now)
        out.append(by_zone[name])
    return out
