"""``counterguard doctor``: check the database, schema, certificates, clock, policy and running controller.

Prints one row per check (OK, WARN, FAIL or SKIP, and why); ``--json`` prints the same as a list.
Exits 1 when any check FAILs, so monitoring and deployment scripts can run it.
"""

from __future__ import annotations

import typer
from rich.table import Table

from controller.cli import context
from controller.cli.output import JsonOption, console, print_json

_STYLES = {"OK": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}


def doctor_command(as_json: bool = JsonOption) -> None:
    """Check the database, schema, certificates, clock, active policy and the running controller."""
    from controller.doctor import FAIL, run_checks

    checks = run_checks(context.settings())
    if as_json:
        print_json(checks)
    else:
        table = Table(title="CounterGuard doctor", title_justify="left")
        for column in ("check", "status", "detail"):
            table.add_column(column)
        for check in checks:
            table.add_row(check.check, f"[{_STYLES[check.status]}]{check.status}[/]", check.detail)
        console.print(table)
    if any(check.status == FAIL for check in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
