"""The days a report may ask for, shared by the reports API and the dashboard's reports page.

Ranges are computed by adding and subtracting days around the ends; a day at the edge of the
calendar (0001-01-01, 9999-12-31) overflows `datetime.date` (OverflowError, a 500). The window
below is wider than any message's life and far from both edges."""

from __future__ import annotations

import datetime as dt

FIRST_DAY = dt.date(1970, 1, 1)
LAST_DAY = dt.date(9000, 12, 31)


def check_day(value: dt.date) -> dt.date:
    """`value`, or ValueError when it is outside [FIRST_DAY, LAST_DAY]."""
    if not FIRST_DAY <= value <= LAST_DAY:
        raise ValueError(f"a day between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()}")
    return value


def parse_day(text: str) -> dt.date:
    """An ISO day (`YYYY-MM-DD`) inside the window; ValueError otherwise."""
    return check_day(dt.date.fromisoformat(text))
