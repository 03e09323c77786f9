"""The injected clock: every component takes a ``Clock`` so tests and the demo can move time."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The real clock: now, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def clock_from(start: dt.datetime, began: float | None = None) -> Clock:
    """A clock that reads ``start`` at the monotonic time ``began`` (default: now) and runs at normal speed.

    ``time.monotonic()`` counts from one point for every process of the host, so a process started
    with another's ``(clock(), time.monotonic())`` reads the same time as that one.
    """
    began = time.monotonic() if began is None else began
    return lambda: start.astimezone(dt.UTC) + dt.timedelta(seconds=time.monotonic() - began)
