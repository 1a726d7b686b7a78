"""Local time on fixed clocks: quiet windows across midnight and across a DST change, a contact's
zone, and one wall-clock time for contacts in several zones."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from server.consent.localtime import QuietHours, clock, next_local, send_times, zone, zone_name_for

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
NIGHT = QuietHours.of({"start": "21:00", "end": "08:00"})


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# --- quiet windows -----------------------------------------------------------------------------


def test_a_window_across_midnight_holds_the_evening_and_the_night_until_the_morning() -> None:
    # Paris is UTC+2 in June.
    morning = utc(2026, 6, 11, 6, 0)  # 08:00 local
    assert NIGHT.until(utc(2026, 6, 10, 21, 30), PARIS) == morning  # 23:30 local
    assert NIGHT.until(utc(2026, 6, 11, 1, 0), PARIS) == morning  # 03:00 local, the next day
    assert NIGHT.until(utc(2026, 6, 10, 19, 0), PARIS) == utc(2026, 6, 11, 6, 0)  # 21:00 sharp
    assert NIGHT.until(utc(2026, 6, 10, 18, 59), PARIS) is None  # 20:59
    assert NIGHT.until(morning, PARIS) is None  # 08:00 sharp: the window has ended
    assert NIGHT.until(utc(2026, 6, 10, 12, 0), PARIS) is None  # 14:00


def test_a_window_across_the_spring_forward_night_ends_at_eight_on_the_new_clock() -> None:
    # 2026-03-08 02:00 EST becomes 03:00 EDT in New York: the night is an hour shorter.
    # 21:00 EST on the 7th is 02:00 UTC; 08:00 EDT on the 8th is 12:00 UTC (not 13:00, which is
    # what 21:00 + 11 hours of standard time would say).
    end = utc(2026, 3, 8, 12, 0)
    assert NIGHT.until(utc(2026, 3, 8, 2, 0), NY) == end  # 21:00 EST, the window opens
    assert NIGHT.until(utc(2026, 3, 8, 6, 30), NY) == end  # 01:30 EST
    assert NIGHT.until(utc(2026, 3, 8, 7, 30), NY) == end  # 03:30 EDT, just after the jump
    assert NIGHT.until(utc(2026, 3, 8, 11, 59), NY) == end  # 07:59 EDT
    assert NIGHT.until(utc(2026, 3, 8, 12, 30), NY) is None  # 08:30 EDT (07:30 on the old clock)
    # That evening's window opens at 21:00 EDT = 01:00 UTC, an hour earlier in UTC than the day before.
    assert NIGHT.until(utc(2026, 3, 9, 0, 59), NY) is None
    assert NIGHT.until(utc(2026, 3, 9, 1, 0), NY) == utc(2026, 3, 9, 12, 0)


def test_a_window_that_ends_inside_the_skipped_hour_ends_when_that_hour_would_have() -> None:
    # 01:00-02:30 on the spring-forward night: 02:30 does not exist; it lands at 03:30 EDT (07:30 UTC).
    short = QuietHours.of({"start": "01:00", "end": "02:30"})
    assert short.until(utc(2026, 3, 8, 6, 15), NY) == utc(2026, 3, 8, 7, 30)  # 01:15 EST
    assert short.until(utc(2026, 3, 8, 7, 30), NY) is None  # 03:30 EDT


def test_a_window_across_the_fall_back_night_is_an_hour_longer() -> None:
    # 2026-11-01 02:00 EDT becomes 01:00 EST. 21:00 EDT on Oct 31 is 01:00 UTC; 08:00 EST is 13:00 UTC.
    assert NIGHT.until(utc(2026, 11, 1, 12, 30), NY) == utc(2026, 11, 1, 13, 0)  # 07:30 EST


def test_days_name_the_evenings_a_window_starts_on() -> None:
    fridays = QuietHours.of({"start": "21:00", "end": "08:00", "days": ["fri"]})
    # 2026-06-12 is a Friday (Paris, UTC+2).
    assert fridays.until(utc(2026, 6, 12, 21, 0), PARIS) == utc(2026, 6, 13, 6, 0)  # Fri 23:00
    assert fridays.until(utc(2026, 6, 13, 1, 0), PARIS) == utc(2026, 6, 13, 6, 0)  # Sat 03:00
    assert fridays.until(utc(2026, 6, 13, 21, 0), PARIS) is None  # Sat 23:00
    assert fridays.until(utc(2026, 6, 11, 21, 0), PARIS) is None  # Thu 23:00


def test_touching_whole_day_windows_hold_until_the_last_one_ends() -> None:
    weekend = QuietHours.of({"start": "00:00", "end": "00:00", "days": ["sat", "sun"]})
    # Saturday 10:00 Paris: quiet all Saturday and all Sunday, until Monday 00:00 (Sunday 22:00 UTC).
    assert weekend.until(utc(2026, 6, 13, 8, 0), PARIS) == utc(2026, 6, 14, 22, 0)
    assert weekend.until(utc(2026, 6, 15, 8, 0), PARIS) is None


# --- zones -------------------------------------------------------------------------------------


def test_the_timezone_attribute_comes_first_then_the_phone_region_then_the_workspace_default() -> None:
    assert zone_name_for({"timezone": "Asia/Tokyo"}, "+12125550100", "UTC") == "Asia/Tokyo"
    assert zone_name_for({}, "+12125550100", "UTC") == "America/New_York"  # a 212 number
    assert zone_name_for({}, "+33612345678", "UTC") == "Europe/Paris"
    assert zone_name_for({}, None, "Europe/Berlin") == "Europe/Berlin"
    assert zone_name_for({}, "+15555550100", "Europe/Berlin") == "Europe/Berlin"  # 555: no region
    # Stored before zones were checked: ignored rather than failing the send.
    assert zone_name_for({"timezone": "Mars/Olympus"}, None, "UTC") == "UTC"


def test_a_number_whose_country_spans_several_zones_takes_the_first_phonenumbers_lists() -> None:
    # A Russian mobile number: phonenumbers lists many zones for it; we take the first.
    from phonenumbers import parse
    from phonenumbers.timezone import time_zones_for_number

    number = "+79161234567"
    listed = time_zones_for_number(parse(number))
    assert len(listed) > 1
    assert zone_name_for({}, number, "UTC") == listed[0]


@pytest.mark.parametrize("bad", ["", "Mars/Olympus", "europe/paris ", "../../etc/passwd", "x" * 100])
def test_a_zone_that_is_not_an_iana_name_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        zone(bad)


@pytest.mark.parametrize("bad", ["24:00", "9:00", "10:60", "ten", "10-00"])
def test_a_time_of_day_is_hh_mm(bad: str) -> None:
    with pytest.raises(ValueError):
        clock(bad)


# --- a time on each contact's clock ------------------------------------------------------------


def test_ten_oclock_in_three_zones_is_three_instants() -> None:
    now = utc(2026, 6, 9, 12, 0)
    people = [
        ({"timezone": "Asia/Tokyo"}, None),
        ({}, "+12125550100"),  # New York by its number
        ({}, None),  # the workspace default
        ({"timezone": "Asia/Tokyo"}, "+12125550100"),  # the attribute wins
    ]
    times = send_times(
        people, at=clock("10:00"), day=dt.date(2026, 6, 10), now=now, default_zone="Europe/Paris"
    )
    assert times == [
        utc(2026, 6, 10, 1, 0),  # 10:00 JST
        utc(2026, 6, 10, 14, 0),  # 10:00 EDT
        utc(2026, 6, 10, 8, 0),  # 10:00 CEST
        utc(2026, 6, 10, 1, 0),
    ]


def test_without_a_date_each_contact_gets_the_next_ten_oclock_on_its_clock() -> None:
    now = utc(2026, 6, 10, 12, 0)  # 21:00 in Tokyo, 08:00 in New York
    assert next_local(clock("10:00"), ZoneInfo("Asia/Tokyo"), day=None, now=now) == utc(2026, 6, 11, 1, 0)
    assert next_local(clock("10:00"), NY, day=None, now=now) == utc(2026, 6, 10, 14, 0)


def test_a_date_already_past_in_a_zone_moves_to_the_next_day_there() -> None:
    now = utc(2026, 6, 10, 3, 0)  # 12:00 in Tokyo: its 10:00 on the 10th has gone
    assert next_local(clock("10:00"), ZoneInfo("Asia/Tokyo"), day=dt.date(2026, 6, 10), now=now) == utc(
        2026, 6, 11, 1, 0
    )


def test_a_local_time_skipped_by_spring_forward_lands_an_hour_later() -> None:
    when = next_local(clock("02:30"), NY, day=dt.date(2026, 3, 8), now=utc(2026, 3, 1))
    assert when == utc(2026, 3, 8, 7, 30)  # 03:30 EDT
