"""The agent's settings: defaults, then the TOML file, then the environment, then the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config
from agent.errors import ConfigError

NO_DEFAULT = Path("/nonexistent/counterguard/agent.toml")


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_there_is_no_file_and_no_environment() -> None:
    config = load_config(environ={}, default_file=NO_DEFAULT)
    assert config == AgentConfig()
    assert config.state_dir == Path("/var/lib/counterguard-agent")
    assert (config.report_interval_seconds, config.heartbeat_interval_seconds) == (5, 60)
    assert (config.batch_max_facts, config.batch_max_bytes, config.outbox_max_facts) == (500, 1024 * 1024, 200_000)
    assert (config.backoff_initial_seconds, config.backoff_max_seconds) == (1, 300)
    assert config.outbox_path == Path("/var/lib/counterguard-agent/outbox.db")
    assert config.key_path.name == "key.pem" and config.enrollment_path.name == "enrollment.json"


def test_file_then_environment_then_command_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'state_dir = "/srv/a"\nreport_interval_seconds = 7\nheartbeat_interval_seconds = 30\n'
                           'extra_application_dirs = ["/opt/apps", "/opt/more"]\ndpkg_status = "/x/status"\n')
    environ = {"COUNTERGUARD_AGENT_REPORT_INTERVAL_SECONDS": "9", "COUNTERGUARD_AGENT_STATE_DIR": "/srv/b"}
    config = load_config(path, environ=environ, overrides={"state_dir": Path("/srv/c"), "log_level": None})
    assert config.heartbeat_interval_seconds == 30  # file
    assert config.report_interval_seconds == 9  # environment beats file
    assert config.state_dir == Path("/srv/c")  # command line beats environment
    assert config.extra_application_dirs == (Path("/opt/apps"), Path("/opt/more"))
    assert config.dpkg_status == Path("/x/status")
    assert config.log_level == "INFO"


def test_agent_table_and_the_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\nbatch_max_facts = 50\nrpc_timeout_seconds = 2.5\n")
    config = load_config(environ={"COUNTERGUARD_AGENT_CONFIG": str(path)}, default_file=NO_DEFAULT)
    assert (config.batch_max_facts, config.rpc_timeout_seconds) == (50, 2.5)


def test_the_default_file_is_read_only_when_it_exists(tmp_path: Path) -> None:
    default = write(tmp_path, "outbox_max_facts = 1000\n")
    assert load_config(environ={}, default_file=default).outbox_max_facts == 1000
    assert load_config(environ={}, default_file=tmp_path / "absent.toml").outbox_max_facts == 200_000


def test_environment_lists_and_empty_dpkg_override() -> None:
    config = load_config(environ={"COUNTERGUARD_AGENT_EXTRA_APPLICATION_DIRS": "/a:/b",
                                  "COUNTERGUARD_AGENT_DPKG_STATUS": ""}, default_file=NO_DEFAULT)
    assert config.extra_application_dirs == (Path("/a"), Path("/b"))
    assert config.dpkg_status is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("report_interval_seconds = 'soon'\n", "field 'report_interval_seconds'"),
        ("batch_max_facts = 2.5\n", "field 'batch_max_facts': expected an integer"),
        ("batch_max_facts = true\n", "field 'batch_max_facts': expected a number"),
        ("state_dir = 3\n", "field 'state_dir': expected a string"),
        ("extra_application_dirs = [1, 2]\n", "field 'extra_application_dirs'"),
        ("colour = 'blue'\n", "unknown field 'colour'"),
        ("heartbeat_interval_seconds = 0\n", "field 'heartbeat_interval_seconds': must be above 0"),
        ("outbox_max_facts = 10\n", "field 'outbox_max_facts': must be at least 100"),
        ("backoff_initial_seconds = 500\n", "field 'backoff_initial_seconds': must not exceed backoff_max_seconds"),
        ("log_level = 'LOUD'\n", "field 'log_level': unknown level"),
        ("report_interval_seconds = \n", "invalid TOML"),
        ("agent = 3\n", "'agent' must be a table"),
    ],
)
def test_an_invalid_file_names_the_file_and_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


def test_an_invalid_variable_names_the_variable_and_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^\$COUNTERGUARD_AGENT_BATCH_MAX_BYTES: field 'batch_max_bytes'"):
        load_config(environ={"COUNTERGUARD_AGENT_BATCH_MAX_BYTES": "lots"}, default_file=NO_DEFAULT)
    with pytest.raises(ConfigError, match=r"^\$COUNTERGUARD_AGENT_REPORT_INTERVAL_SECONDS: .*must be above 0"):
        load_config(environ={"COUNTERGUARD_AGENT_REPORT_INTERVAL_SECONDS": "-1"}, default_file=NO_DEFAULT)


def test_a_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(environ={"COUNTERGUARD_AGENT_CONFIG": str(tmp_path / "gone.toml")})


def test_an_unknown_command_line_setting_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_config(environ={}, default_file=NO_DEFAULT, overrides={"colour": "blue"})
