"""The controller's settings: typed defaults here, overridden by a TOML file, then by the environment.

This is the one place that reads configuration. Precedence, lowest first: the defaults below,
the TOML file (``--config``, ``$COUNTERGUARD_CONFIG`` or ``./counterguard.toml`` when present),
environment variables ``COUNTERGUARD_<FIELD>`` (e.g. ``COUNTERGUARD_DATABASE_URL``), and finally
what a command line passes to :func:`load_settings` as ``overrides``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "COUNTERGUARD_"
DEFAULT_CONFIG_FILE = Path("counterguard.toml")
EVALUATION_PLACES = ("auto", "process", "threads")
_CHOICES = {"rules_evaluation_process": EVALUATION_PLACES}


class ConfigError(Exception):
    """A configuration file or variable is invalid; the message names which and why."""


@dataclass(frozen=True)
class Settings:
    """Everything the controller and the admin CLI need to know about their surroundings."""

    data_dir: Path = Path("var")
    # Empty means the embedded SQLite database ``<data_dir>/counterguard.db``.
    database_url: str = ""
    # Mutual-TLS port for agents (Report, FetchPolicy) and the server-authenticated enrolment port.
    listen: str = "0.0.0.0:50051"
    enroll_listen: str = "0.0.0.0:50052"
    # Host name agents should use for the mutual-TLS port; empty: the host they enrolled with.
    advertise_host: str = ""
    # Empty paths mean "create and keep our own under <data_dir>/pki".
    ca_cert: str = ""
    ca_key: str = ""
    server_cert: str = ""
    server_key: str = ""
    # Extra DNS names / IP addresses for the server certificate we create.
    server_names: tuple[str, ...] = ()
    client_cert_days: int = 365
    max_message_bytes: int = 4 * 1024 * 1024
    max_facts_per_batch: int = 2000
    max_workers: int = 16
    # How often the periodic sweep evaluates the rules that need time to pass (machine still on after
    # work, agent silent); with several controllers one of them sweeps at a time.
    rules_sweep_interval_seconds: int = 60
    # Rules are evaluated after a report's acknowledgement, in these threads, coalesced per agent (see
    # controller.evaluation). A report waits at most this long for its own evaluation when a thread is
    # free for it (so the answer can carry its notices); under load the answer does not wait.
    rules_evaluation_threads: int = 2
    rules_evaluation_wait_seconds: float = 5.0
    # Where those evaluations run: "process" (a child process of each controller process, niced by
    # rules_evaluation_niceness, so the answers keep the CPU when it is short; see controller.evaluator),
    # "threads" (in the answering process), or "auto": a process on PostgreSQL, threads on SQLite
    # (whose one write lock a niced process would hold up every report with).
    rules_evaluation_process: str = "auto"
    rules_evaluation_niceness: int = 10
    # Overload (see controller.load): while this many calls wait for one of the max_workers threads, a
    # new Report is refused at once with RESOURCE_EXHAUSTED and a retry-after, instead of queueing into
    # the agent's deadline; while Reports take longer than rules_yield_ms on average, one evaluation
    # runs at a time and no answer waits for one. 0 turns either off.
    report_queue_limit: int = 64
    rules_yield_ms: int = 100
    # Per-agent limits on Report (token buckets in each controller process, see controller.limits);
    # a rate of 0 turns that limit off. A batch larger than the fact burst waits for a full bucket.
    agent_reports_per_second: float = 5.0
    agent_report_burst: int = 20
    agent_facts_per_second: float = 1000.0
    agent_fact_burst: int = 5000
    # FetchPolicy per agent (an agent asks at start and every few minutes), and failed enrolments per
    # address (a wrong or used-up token, a bad request; successful ones are not counted).
    agent_policy_fetches_per_minute: float = 30.0
    agent_policy_fetch_burst: int = 10
    enroll_failures_per_minute: float = 10.0
    enroll_failure_burst: int = 20
    # Prometheus metrics on http://<metrics_host>:<metrics_port>/metrics; port 0 serves none.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    # The controller's log lines: "text" or "json" (one JSON object per line); timestamps are UTC.
    log_format: str = "text"
    # ``serve`` processes sharing the two ports (SO_REUSEPORT): one Python process uses one core.
    workers: int = 1
    # Share the ports with other controllers started on purpose (implied when workers > 1); off, a
    # second controller on the same ports is refused instead of silently taking half the agents.
    reuse_port: bool = False

    def evaluates_in_a_process(self) -> bool:
        """Whether rules evaluations run in a process of their own (``rules_evaluation_process``)."""
        choice = self.rules_evaluation_process.strip().lower()
        if choice not in EVALUATION_PLACES:
            raise ConfigError(f"field 'rules_evaluation_process': expected one of {', '.join(EVALUATION_PLACES)}, "
                              f"got {self.rules_evaluation_process!r}")
        if choice == "auto":
            return not self.resolved_database_url.startswith("sqlite")
        return choice == "process"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'counterguard.db').resolve()}"


def _coerce(name: str, raw: Any, target: Any, source: str) -> Any:
    """Convert ``raw`` (from TOML or the environment) to the type of the default ``target``."""
    try:
        if isinstance(target, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if isinstance(target, int):
            if isinstance(raw, bool):
                raise ValueError(f"expected an integer, got {raw!r}")
            return int(raw)
        if isinstance(target, float):
            if isinstance(raw, bool):
                raise ValueError(f"expected a number, got {raw!r}")
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError(f"expected a finite number, got {raw!r}")
            return number
        if isinstance(target, Path):
            return Path(str(raw))
        if isinstance(target, tuple):
            if isinstance(raw, str):
                return tuple(part.strip() for part in raw.split(",") if part.strip())
            if isinstance(raw, list) and all(isinstance(v, str) for v in raw):
                return tuple(raw)
            raise ValueError(f"expected a list of strings, got {raw!r}")
        if not isinstance(raw, str):
            raise ValueError(f"expected a string, got {raw!r}")
        if name in _CHOICES and raw.strip().lower() not in _CHOICES[name]:
            raise ValueError(f"expected one of {', '.join(_CHOICES[name])}, got {raw!r}")
        return raw
    except ValueError as exc:
        raise ConfigError(f"{source}: field {name!r}: {exc}") from None


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, a TOML file, the environment and explicit overrides."""
    environ = os.environ if environ is None else environ
    defaults = Settings()
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}

    path = config_file or (Path(environ[ENV_PREFIX + "CONFIG"]) if environ.get(ENV_PREFIX + "CONFIG") else None)
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        section = data.get("controller", data)
        for key, raw in section.items():
            if key not in fields:
                raise ConfigError(f"{path}: unknown field {key!r}")
            values[key] = _coerce(key, raw, fields[key], str(path))

    for name, default in fields.items():
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name], default, f"${env_name}")

    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in fields:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(name, raw, fields[name], "command line")
    return dataclasses.replace(defaults, **values)
