"""``counterguard`` asset list | show | register | sign | maintain | import | check (the equipment register)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Mount this module's commands on ``app``."""
