"""Fixtures shared by the controller's tests (the database, clock and PKI ones are in ``tests/conftest.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from controller.ingest import IngestService


@pytest.fixture
def ingest(engine: Engine, clock: Any) -> IngestService:
    """The real ingest service on the test's database and clock."""
    return IngestService(engine, clock)
