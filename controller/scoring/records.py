"""Database tables of the score sheet (filled in by the scoring work; registered on the shared metadata)."""

from __future__ import annotations
