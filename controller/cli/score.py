"""``counterguard`` score month | close | reopen | explain | import (the monthly sheet)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Mount this module's commands on ``app``."""
