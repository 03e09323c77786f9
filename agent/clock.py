"""The injected clock: the outbox, transport and service take a ``Clock`` so tests can control time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The real clock: now, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)
