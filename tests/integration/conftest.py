"""Fixtures for the integration tests: a running controller and an agent's state folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.processes import Agent, Controller, start_controller


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    running = start_controller(tmp_path / "controller")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return Agent(state_dir=tmp_path / "agent")
