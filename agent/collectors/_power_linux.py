"""Linux power state: the boot time from ``/proc/stat`` and whether systemd is shutting the machine down.

:func:`system_is_stopping` answers, cheaply and without a subprocess or D-Bus, the question an agent asks
when it is told to stop: is this a shutdown/reboot, or only the service being restarted? It is true when
systemd runs the machine (``<run>/systemd/system`` exists) and either

- a shutdown scheduled with ``shutdown``/``systemctl`` is due: ``<run>/systemd/shutdown/scheduled`` exists
  and its ``USEC=`` time is not in the future (an unreadable time counts as due); logind keeps the file
  until the machine is down, and removes it when the shutdown is cancelled; or
- ``<run>/nologin`` exists: ``systemd-user-sessions.service`` creates it when it is stopped on the way
  down, and logind five minutes before a scheduled shutdown.

It is best effort: an immediate ``systemctl reboot`` is seen only once ``systemd-user-sessions`` has
stopped, which may be after the agent, and an administrator's manual ``/run/nologin`` reads as a shutdown.
"""

from __future__ import annotations

import datetime as dt

from agent.clock import Clock, utc_now
from agent.collectors import Roots
from agent.collectors._files import read_text


def read_boot_time(roots: Roots) -> dt.datetime | None:
    """The ``btime`` line of ``<procfs>/stat`` as aware UTC; ``None`` when it cannot be read."""
    for line in read_text(roots.procfs / "stat").splitlines():
        key, _, value = line.partition(" ")
        if key == "btime":
            try:
                return dt.datetime.fromtimestamp(int(value.strip()), dt.UTC)
            except (ValueError, OverflowError, OSError):
                return None
    return None


def _scheduled_shutdown_due(roots: Roots, now: dt.datetime) -> bool:
    """A scheduled shutdown exists and its time has come."""
    path = roots.run / "systemd" / "shutdown" / "scheduled"
    if not path.is_file():
        return False
    for line in read_text(path).splitlines():
        key, _, value = line.partition("=")
        if key == "USEC" and value.strip().isdigit():
            return int(value) / 1_000_000 <= now.timestamp()
    return True


def system_is_stopping(roots: Roots = Roots(), clock: Clock = utc_now) -> bool:
    """Whether systemd is shutting down or rebooting the machine (see the module docstring for how)."""
    if not (roots.run / "systemd" / "system").is_dir():
        return False
    return _scheduled_shutdown_due(roots, clock()) or (roots.run / "nologin").exists()
