"""The agent's settings: typed defaults in one dataclass, overridden by a TOML file, then by the environment.

This is the one place that reads configuration. Precedence, lowest first: the defaults of
:class:`AgentConfig`, the TOML file (``--config``, else ``$COUNTERGUARD_AGENT_CONFIG``, else
``/etc/counterguard/agent.toml`` when it exists, on Windows ``%ProgramData%\\CounterGuard\\agent.toml``; keys at
the top level or in an ``[agent]`` table),
environment variables ``COUNTERGUARD_AGENT_<FIELD>`` (e.g. ``COUNTERGUARD_AGENT_STATE_DIR``), and
finally what the command line passes as ``overrides``. Any invalid value raises
:class:`~agent.errors.ConfigError` naming the file or variable and the field.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

ENV_PREFIX = "COUNTERGUARD_AGENT_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
if sys.platform == "win32":  # under %ProgramData%\CounterGuard (agent.windows.paths)
    from agent.windows import paths as _windows_paths

    DEFAULT_CONFIG_FILE = Path(_windows_paths.config_file())
    DEFAULT_STATE_DIR = Path(_windows_paths.state_dir())
else:
    DEFAULT_CONFIG_FILE = Path("/etc/counterguard/agent.toml")
    DEFAULT_STATE_DIR = Path("/var/lib/counterguard-agent")
MiB = 1024 * 1024


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs to know about its surroundings; intervals are in seconds."""

    # Holds outbox.db, key.pem (0600), cert.pem, ca.pem, enrollment.json, agent.log and status.json.
    state_dir: Path = DEFAULT_STATE_DIR
    report_interval_seconds: float = 5
    heartbeat_interval_seconds: float = 60
    process_poll_interval_seconds: float = 2
    session_poll_interval_seconds: float = 10
    software_scan_interval_seconds: float = 300
    # How often the inventory is collected; it is sent only when it changed, or after the full interval.
    inventory_interval_seconds: float = 3600
    inventory_full_interval_seconds: float = 86400
    # Input idleness: polled this often; no input for idle_threshold_seconds is "idle".
    activity_poll_interval_seconds: float = 5
    idle_threshold_seconds: float = 300
    # The foreground window is polled only when the controller's policy turns it on.
    foreground_poll_interval_seconds: float = 2
    # Removable storage: polled this often, and at once when something appears under a mount root.
    removable_poll_interval_seconds: float = 2
    # Antivirus products (those the policy lists) are checked at start and this often.
    antivirus_check_interval_seconds: float = 600
    batch_max_facts: int = 500
    batch_max_bytes: int = 1 * MiB
    outbox_max_facts: int = 200_000
    rpc_timeout_seconds: float = 15
    backoff_initial_seconds: float = 1
    backoff_max_seconds: float = 300
    # `run --once` gives up after this long without an empty outbox.
    run_once_timeout_seconds: float = 120
    # The last send when the service stops.
    shutdown_send_timeout_seconds: float = 3
    # Appended to the collectors' default freedesktop application directories.
    extra_application_dirs: tuple[Path, ...] = ()
    # None: the system's /var/lib/dpkg/status.
    dpkg_status: Path | None = None
    # A change in an install location (dpkg's database, application folders, /opt ...) triggers one
    # software rescan once the burst of changes has been quiet this long, or this long after it began.
    install_watch_quiet_seconds: float = 2
    install_watch_max_delay_seconds: float = 8
    # Self-limits (see agent/selflimit.py): checked this often; CPU in % of one core averaged over the
    # window; past a limit optional work is shed, and restored after being back under for a while.
    self_limit_check_interval_seconds: float = 10
    self_limit_cpu_percent: float = 5
    self_limit_cpu_window_seconds: float = 60
    self_limit_rss_mib: float = 120
    self_limit_restore_seconds: float = 120
    # Restart when the RSS passes rss × this factor, or stays over the limit this many checks after shedding,
    # but never sooner than the minimum uptime (no restart loop when the limit is set too low).
    self_limit_hard_rss_factor: float = 1.5
    self_limit_restart_checks: int = 3
    self_limit_restart_min_uptime_seconds: float = 300
    log_level: str = "INFO"
    # The session helpers' channel: ``session.sock`` in this folder (Linux; Windows uses a named pipe).
    run_dir: Path = Path("/run/counterguard-agent")
    # Input idleness and the foreground window: "agent" (its own probes), "helper" (the session
    # helper's), "auto" (the helper on Windows, whose service cannot see the desktop; else the agent's).
    desktop_probes: str = "auto"
    # The JSON-lines log in the state directory: rotated at this size, keeping this many old files.
    log_max_bytes: int = 5 * MiB
    log_backup_count: int = 3

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.db"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "key.pem"

    @property
    def cert_path(self) -> Path:
        return self.state_dir / "cert.pem"

    @property
    def ca_path(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def enrollment_path(self) -> Path:
        return self.state_dir / "enrollment.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "agent.log"

    @property
    def status_path(self) -> Path:
        """What the running agent writes at every self-limit check, for ``counterguard-agent status``."""
        return self.state_dir / "status.json"


_TYPES: dict[str, Any] = typing.get_type_hints(AgentConfig)
_MINIMUMS: dict[str, float] = {
    "batch_max_facts": 1,
    "batch_max_bytes": 1024,
    "outbox_max_facts": 100,
    "self_limit_hard_rss_factor": 1,
    "self_limit_restart_checks": 1,
    "self_limit_restart_min_uptime_seconds": 0,
    "log_max_bytes": 64 * 1024,
    "log_backup_count": 1,
}


def _as_number(raw: Any, kind: type) -> float | int:
    if isinstance(raw, bool):
        raise ValueError(f"expected a number, got {raw!r}")
    if kind is int:
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError(f"expected an integer, got {raw!r}")
        return int(raw) if not isinstance(raw, str) else int(raw.strip())
    return float(raw)


def _as_paths(raw: Any) -> tuple[Path, ...]:
    if isinstance(raw, str):
        return tuple(Path(part.strip()) for part in raw.split(os.pathsep) if part.strip())
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return tuple(Path(item) for item in raw)
    raise ValueError(f"expected a list of paths, got {raw!r}")


def _coerce(name: str, raw: Any, source: str) -> Any:
    """Convert ``raw`` (from TOML, the environment or the command line) to the field's declared type."""
    kind = _TYPES[name]
    try:
        if kind in (int, float):
            return _as_number(raw, kind)
        if kind == tuple[Path, ...]:
            return _as_paths(raw)
        if isinstance(raw, Path):
            raw = str(raw)
        if not isinstance(raw, str):
            raise ValueError(f"expected a string, got {raw!r}")
        if kind == Path | None:
            return Path(raw) if raw.strip() else None
        return Path(raw) if kind is Path else raw
    except ValueError as exc:
        raise ConfigError(f"{source}: field {name!r}: {exc}") from None


def _check(config: AgentConfig, sources: Mapping[str, str]) -> None:
    """Reject values that parse but make no sense (a zero interval, an unknown log level)."""
    def fail(name: str, why: str) -> None:
        raise ConfigError(f"{sources.get(name, 'defaults')}: field {name!r}: {why}")

    for name, kind in _TYPES.items():
        if kind not in (int, float):
            continue
        value, minimum = getattr(config, name), _MINIMUMS.get(name)
        if minimum is not None and value < minimum:
            fail(name, f"must be at least {minimum}, got {value}")
        if minimum is None and value <= 0:
            fail(name, f"must be above 0, got {value}")
    if config.backoff_initial_seconds > config.backoff_max_seconds:
        fail("backoff_initial_seconds", "must not exceed backoff_max_seconds")
    if config.install_watch_quiet_seconds > config.install_watch_max_delay_seconds:
        fail("install_watch_quiet_seconds", "must not exceed install_watch_max_delay_seconds")
    if config.desktop_probes not in ("auto", "agent", "helper"):
        fail("desktop_probes", f"unknown value {config.desktop_probes!r} (use auto, agent or helper)")
    if not isinstance(logging.getLevelName(config.log_level.upper()), int):
        fail("log_level", f"unknown level {config.log_level!r} (use DEBUG, INFO, WARNING or ERROR)")


def _config_path(config_file: Path | None, environ: Mapping[str, str], default_file: Path) -> Path | None:
    if config_file is not None:
        return config_file
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return default_file if default_file.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    section = data.get("agent", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'agent' must be a table")
    return section


def load_config(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    default_file: Path = DEFAULT_CONFIG_FILE,
) -> AgentConfig:
    """Build :class:`AgentConfig` from defaults, a TOML file, the environment and explicit overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    path = _config_path(config_file, environ, default_file)
    if path is not None:
        for key, raw in _read_file(path).items():
            if key not in _TYPES:
                raise ConfigError(f"{path}: unknown field {key!r}")
            values[key], sources[key] = _coerce(key, raw, str(path)), str(path)
    for name in _TYPES:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name], sources[name] = _coerce(name, environ[env_name], f"${env_name}"), f"${env_name}"
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in _TYPES:
            raise ConfigError(f"command line: unknown setting {name!r}")
        values[name], sources[name] = _coerce(name, raw, "command line"), "command line"
    config = dataclasses.replace(AgentConfig(), **values)
    _check(config, sources)
    return config
