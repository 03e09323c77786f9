"""The controller's log lines: text or JSON lines, UTC timestamps, and a clear error for an unknown format."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest

from controller.errors import InvalidInput
from controller.logs import configure_logging
from tests.controller.cli_run import run


def logged(log_format: str, emit) -> list[str]:  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    configure_logging(log_format, stream)
    emit(logging.getLogger("controller.test"))
    return stream.getvalue().splitlines()


def test_json_lines_carry_utc_time_level_logger_message_extra_fields_and_the_trace() -> None:
    def emit(log: logging.Logger) -> None:
        log.info("agent %s enrolled\nfor window %s", "ag-1", "W03", extra={"agent": "ag-1"})
        try:
            raise ValueError("broken")
        except ValueError:
            log.exception("evaluation failed")
        log.debug("not shown at INFO")

    first, second = (json.loads(line) for line in logged("json", emit))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert {k: first[k] for k in ("level", "logger", "message", "agent")} == {
        "level": "INFO", "logger": "controller.test", "message": "agent ag-1 enrolled\nfor window W03", "agent": "ag-1"}
    assert isinstance(first["process"], int) and "exception" not in first
    assert second["level"] == "ERROR" and second["exception"].endswith("ValueError: broken")


def test_text_lines_have_utc_iso_times() -> None:
    (line,) = logged("text", lambda log: log.warning("clock skew of %d s", 90))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING controller.test: clock skew of 90 s", line)


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidInput, match="^unknown log format 'xml': use text or json$"):
        configure_logging("xml")


def test_serve_with_an_unknown_log_format_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(capsys, "--data-dir", str(tmp_path), "serve", "--log-format", "xml")
    assert (code, out) == (1, "")
    assert err.strip() == "error: unknown log format 'xml': use text or json"
    assert not (tmp_path / "counterguard.db").exists(), "refused before anything was started"
