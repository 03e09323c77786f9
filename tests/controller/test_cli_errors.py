"""What a person sees when the admin CLI cannot do its job: one sentence, never a trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COUNTERGUARD = str(Path(sys.executable).parent / "counterguard")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COUNTERGUARD, *args], capture_output=True, text=True, timeout=60)


def test_an_unreachable_database_is_one_sentence_naming_it_without_the_password() -> None:
    result = _run("--db", "postgresql+psycopg://admin:s3cret@127.0.0.1:9/counterguard", "agents", "list")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
    assert result.stderr.startswith("error: cannot open the database postgresql+psycopg://admin:***@127.0.0.1:9/counterguard")


def test_a_malformed_database_url_is_named() -> None:
    result = _run("--db", "nonsense://", "agents", "list")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the database URL 'nonsense://' is not valid" in result.stderr


def test_a_missing_option_gets_usage_help_not_a_trace(tmp_path: Path) -> None:
    result = _run("--data-dir", str(tmp_path), "token", "create")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Missing option '--window'" in result.stderr


def test_an_invalid_settings_file_names_the_file_and_field(tmp_path: Path) -> None:
    settings = tmp_path / "counterguard.toml"
    settings.write_text("[controller]\nmax_message_bytes = 'lots'\n")
    result = _run("--config", str(settings), "agents", "list")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(settings) in result.stderr and "max_message_bytes" in result.stderr


def test_an_unknown_place_for_the_rules_evaluation_is_named_with_the_choices(tmp_path: Path) -> None:
    result = subprocess.run([COUNTERGUARD, "--data-dir", str(tmp_path), "serve", "--listen", "127.0.0.1:0",
                             "--enroll-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COUNTERGUARD_RULES_EVALUATION_PROCESS": "elsewhere"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ("$COUNTERGUARD_RULES_EVALUATION_PROCESS: field 'rules_evaluation_process': expected one of auto, "
            "process, threads, got 'elsewhere'") in result.stderr


@pytest.mark.parametrize("variable, sentence", [
    ("COUNTERGUARD_REPORT_QUEUE_LIMIT=-1", "setting report_queue_limit must be 0 (off) or more, not -1"),
    ("COUNTERGUARD_AGENT_REPORT_BURST=0",
     "setting agent_report_burst must be at least 1 while agent_reports_per_second is above 0, not 0"),
])
def test_a_wrong_limit_stops_serve_before_it_creates_the_database(tmp_path: Path, variable: str,
                                                                   sentence: str) -> None:
    name, value = variable.split("=")
    result = subprocess.run([COUNTERGUARD, "--data-dir", str(tmp_path), "serve", "--listen", "127.0.0.1:0",
                             "--enroll-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, name: value})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert sentence in result.stderr
    assert list(tmp_path.iterdir()) == []  # no database, no certificates
