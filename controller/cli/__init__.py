"""The admin CLI, ``counterguard``: one Typer app, one module per command group.

Every command reads the settings through :func:`controller.cli.context.settings`, prints with
:mod:`controller.cli.output`, and turns a :class:`~controller.errors.CounterGuardError` into a
one-sentence error and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from controller.cli import context
from controller.cli.output import fail
from controller.config import ConfigError
from controller.errors import CounterGuardError

app = typer.Typer(
    name="counterguard",
    help="CounterGuard controller and admin tool for service-hall workstations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML settings file."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Controller state folder (default ./var)."),
    database_url: Optional[str] = typer.Option(None, "--db", help="Database URL (default: SQLite in the data folder)."),
) -> None:
    context.configure(config=config, overrides={"data_dir": data_dir, "database_url": database_url})


_registered = False


def _register() -> None:
    """Mount every command group once per process; each module exposes ``register(app)``."""
    global _registered
    if _registered:
        return
    _registered = True
    from controller.cli import (agents, assets, decisions, doctor, inventory, org, policy, score, serve, tokens,
                                violations)

    for module in (serve, tokens, agents, inventory, policy, violations, decisions, org, score, assets, doctor):
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``counterguard`` console script.

    Typer handles usage errors itself (usage line, message, exit 2); our own errors become
    ``error: <one sentence>`` and exit 1.
    """
    _register()
    try:
        app(args=argv, prog_name="counterguard")
    except (CounterGuardError, ConfigError) as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None


if __name__ == "__main__":
    main(sys.argv[1:])
