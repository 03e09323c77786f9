"""The running agent's status file: written at every self-limit check, read by ``counterguard-agent status``.

The file is JSON in the state folder, replaced atomically (written beside it, then renamed), so a
reader never sees half of it. The agent counts as running when the file's process exists and the
file is fresh: written within three check intervals (plus a few seconds of slack for a busy machine).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import psutil

_SLACK_SECONDS = 5.0
_MiB = 1024 * 1024


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Replace the status file with ``data`` in one step."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)


def _alive(pid: int, written_at: dt.datetime) -> bool:
    """Whether ``pid`` is a process that existed when the file was written (not a later one with its number)."""
    try:
        return psutil.Process(pid).create_time() <= written_at.timestamp() + 1
    except (psutil.Error, ValueError):
        return False


def read_status(path: Path, now: dt.datetime) -> dict[str, Any]:
    """The status file's content plus ``running``, ``stale`` and ``age_seconds``; ``reason`` when there is none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        written_at = dt.datetime.fromisoformat(data["written_at"])
        pid, interval = int(data["pid"]), float(data["check_interval_seconds"])
    except FileNotFoundError:
        return {"running": False,
                "reason": f"no status file ({path}): only a running agent (`run`, not `run --once`) writes it"}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"running": False, "reason": f"the status file {path} is unreadable ({exc})"}
    age = (now - written_at).total_seconds()
    stale = age > 3 * interval + _SLACK_SECONDS
    alive = _alive(pid, written_at)
    return {**data, "running": alive and not stale, "stale": stale, "process_exists": alive, "age_seconds": round(age, 1)}


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {int(seconds) % 60:02d}s"


def describe(status: dict[str, Any]) -> list[str]:
    """The status lines ``counterguard-agent status`` prints for the running agent."""
    if "reason" in status:
        return [f"agent:         no status ({status['reason']})"]
    written = f"status written {status['written_at']}, {_duration(status['age_seconds'])} ago"
    if not status["running"]:
        why = "its process is gone" if not status["process_exists"] else "it stopped writing its status"
        return [f"agent:         not running ({why}; last {written})"]
    limits = status["limits"]
    recent = status["cpu_percent_recent"]
    recent_text = f", {recent:.2f} % over the last {status['cpu_window_seconds']:g} s" if recent is not None else ""
    return [
        f"agent:         running, pid {status['pid']}, version {status['version']}, up {_duration(status['uptime_seconds'])}",
        f"resources:     RSS {status['rss_bytes'] / _MiB:.1f} MiB (limit {limits['rss_bytes'] / _MiB:g} MiB); "
        f"CPU {status['cpu_percent_since_start']:.2f} % of one core since start{recent_text} "
        f"(limit {limits['cpu_percent']:g} %)",
        f"shed work:     {', '.join(status['shed']) or 'none'}",
    ]
