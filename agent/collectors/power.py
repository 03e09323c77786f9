"""The power collector: boot, shutdown and heartbeat events, each carrying when the running system booted.

The controller merges heartbeats into on-intervals keyed by the boot time, so every event names it.
The back end for this platform is chosen once, at import; Linux is ``_power_linux``, Windows
``_power_windows`` (where a Fast Startup power-on counts as a boot).
"""

from __future__ import annotations

import datetime as dt
import sys

from agent.clock import Clock, utc_now
from agent.collectors import Roots
from agent.collectors._files import timestamp
from agent.errors import AgentError
from protos.counterguard.v1 import facts_pb2

if sys.platform.startswith("linux"):
    from agent.collectors import _power_linux as _backend

    _NO_BOOT_TIME = "{roots.procfs}/stat has no readable btime line"
elif sys.platform == "win32":
    from agent.collectors import _power_windows as _backend

    _NO_BOOT_TIME = "Windows gave no tick count"
else:  # pragma: no cover - no other platform has a back end
    raise NotImplementedError(f"no power collector for platform {sys.platform!r}")

__all__ = ["BootTimeUnavailable", "boot_event", "boot_time", "heartbeat", "shutdown_event", "system_is_stopping"]

Kind = facts_pb2.PowerEvent.Kind


class BootTimeUnavailable(AgentError):
    """The platform did not say when the system booted."""


def boot_time(roots: Roots = Roots()) -> dt.datetime:
    """When the running system booted, aware UTC. Raises :class:`BootTimeUnavailable` if that is unknown."""
    booted = _backend.read_boot_time(roots)
    if booted is None:
        raise BootTimeUnavailable(f"no boot time: {_NO_BOOT_TIME.format(roots=roots)}")
    return booted


def _event(kind: Kind, roots: Roots) -> facts_pb2.PowerEvent:
    """A power event; ``boot_time`` stays unset when the platform does not know it."""
    booted = _backend.read_boot_time(roots)
    return facts_pb2.PowerEvent(kind=kind, boot_time=timestamp(booted) if booted is not None else None)


def boot_event(roots: Roots = Roots()) -> facts_pb2.PowerEvent:
    """The system booted (sent once per boot, when the agent first runs after it)."""
    return _event(facts_pb2.PowerEvent.KIND_BOOT, roots)


def heartbeat(roots: Roots = Roots()) -> facts_pb2.PowerEvent:
    """The system is still up."""
    return _event(facts_pb2.PowerEvent.KIND_HEARTBEAT, roots)


def shutdown_event(roots: Roots = Roots()) -> facts_pb2.PowerEvent:
    """The system is shutting down or rebooting."""
    return _event(facts_pb2.PowerEvent.KIND_SHUTDOWN, roots)


def system_is_stopping(roots: Roots = Roots(), clock: Clock = utc_now) -> bool:
    """Best effort, cheap, no subprocess: whether the system is shutting down or rebooting right now.

    On Linux: systemd runs the machine and either a scheduled shutdown is due
    (``/run/systemd/shutdown/scheduled``) or ``/run/nologin`` exists; see ``_power_linux`` for why.
    On Windows: the Service Control Manager told the service so; see ``_power_windows``.
    """
    return _backend.system_is_stopping(roots, clock)
