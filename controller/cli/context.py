"""Shared state of one CLI invocation: the settings and a lazily opened database engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from sqlalchemy.engine import Engine

from controller.config import Settings, load_settings

_config: Path | None = None
_overrides: dict[str, Any] = {}
_settings: Settings | None = None
_engine: Engine | None = None


def configure(config: Path | None, overrides: Mapping[str, Any]) -> None:
    """Remember the global options; nothing is read until a command needs it."""
    global _config, _overrides, _settings, _engine
    _config, _overrides, _settings, _engine = config, dict(overrides), None, None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = load_settings(config_file=_config, overrides=_overrides)
    return _settings


def engine() -> Engine:
    """The database engine, with the schema migrated to the current version."""
    global _engine
    if _engine is None:
        from controller.migrate import open_database

        _engine = open_database(settings().resolved_database_url)
    return _engine
