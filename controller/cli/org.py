"""``counterguard`` staff, unit, window, assign, leave and account commands (the organisation)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Mount this module's commands on ``app``."""
