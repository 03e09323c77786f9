"""Database tables of the equipment register (filled in by the asset work; registered on the shared metadata)."""

from __future__ import annotations
