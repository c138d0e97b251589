"""IANA time zones as users name them: the one check for a campaign's sending window and a
workspace's own zone."""

from __future__ import annotations

import zoneinfo
from functools import cache

from services.errors import DomainError


@cache
def known_timezones() -> frozenset[str]:
    # A set look-up rather than ZoneInfo(): that raises four kinds of error for a bad key.
    # "localtime" is the server's own zone, which means nothing to a user.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def check_timezone(name: str, field: str) -> str:
    """`name` when it is an IANA time zone, else INVALID_TIMEZONE on `field`."""
    if name not in known_timezones():
        raise DomainError(
            "INVALID_TIMEZONE", f"'{name}' is not an IANA time zone (like Europe/London).", field
        )
    return name
