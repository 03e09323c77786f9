"""The injected clock: every component takes a ``Clock`` so tests and the demo can move time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The real clock: now, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)
