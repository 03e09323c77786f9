"""Database tables of the policy store (filled in by the policy store work)."""

from __future__ import annotations
