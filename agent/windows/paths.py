"""Where the agent keeps its files on Windows: under ``%ProgramData%\\CounterGuard``.

``agent.toml`` (the settings, readable by every user: the per-session helper reads it too) sits in that folder,
and the state (key, certificates, outbox, logs) in its ``agent`` subfolder, which ``install`` restricts to
LocalSystem and the Administrators group. ``%ProgramData%`` is read from the environment given, so the
choice is tested anywhere.
"""

from __future__ import annotations

import ntpath
import os
from collections.abc import Mapping

_FALLBACK_PROGRAM_DATA = r"C:\ProgramData"


def program_data(environ: Mapping[str, str] | None = None) -> str:
    """``%ProgramData%`` (``C:\\ProgramData`` on a standard installation)."""
    environ = os.environ if environ is None else environ
    return environ.get("ProgramData") or environ.get("ALLUSERSPROFILE") or _FALLBACK_PROGRAM_DATA


def base_dir(environ: Mapping[str, str] | None = None) -> str:
    """``%ProgramData%\\CounterGuard``."""
    return ntpath.join(program_data(environ), "CounterGuard")


def state_dir(environ: Mapping[str, str] | None = None) -> str:
    """``%ProgramData%\\CounterGuard\\agent``: the agent's key, certificates, outbox and logs."""
    return ntpath.join(base_dir(environ), "agent")


def config_file(environ: Mapping[str, str] | None = None) -> str:
    """``%ProgramData%\\CounterGuard\\agent.toml``: the settings file read when no other is named."""
    return ntpath.join(base_dir(environ), "agent.toml")
