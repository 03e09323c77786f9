"""Run the admin CLI in this process, as the CLI tests do: exit code, standard output, standard error."""

from __future__ import annotations

import pytest

from controller.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``counterguard ARGS`` in this process: exit code, standard output, standard error."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
