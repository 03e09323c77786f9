"""Database tables of the rules engine (filled in by the rules work)."""

from __future__ import annotations
