"""Column types shared by the models.

``UTCDateTime`` exists because SQLite has no time zone support: a ``DateTime(timezone=True)``
column comes back *naive* from SQLite and *aware* from PostgreSQL, and comparing the two raises.
Every timestamp this package writes is therefore normalised to UTC on the way in and comes back
aware (UTC) on both databases.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


#: Beijing time (China has one time zone and no daylight saving time): how times are shown to
#: users and read from them; stored times are UTC.
CHINA_TZ = timezone(timedelta(hours=8), "北京时间")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """Aware UTC datetime; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else as_utc(value)
