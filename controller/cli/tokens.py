"""``counterguard token create | list | revoke``: the enrolment tokens admins hand to installers."""

from __future__ import annotations

import datetime as dt
import getpass
import socket

import typer

from controller.cli import context
from controller.cli.output import JsonOption, fmt, print_json, print_table, to_jsonable
from controller.config import Settings
from controller.server import ca_cert_path
from controller.tokens import TokenService, parse_duration

token_app = typer.Typer(help="Create, list and revoke enrolment tokens.", no_args_is_help=True)


def _service() -> TokenService:
    return TokenService(context.engine())


def _whoami() -> str:
    try:
        return getpass.getuser()[:128]
    except (OSError, KeyError):  # no login name (e.g. a container without a passwd entry)
        return ""


def enroll_address(settings: Settings) -> str:
    """The enrolment address to give an installer: the configured one, with a real host name."""
    host, _, port = settings.enroll_listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = settings.advertise_host or socket.getfqdn()
    return f"{host}:{port}"


@token_app.command("create")
def create(
    window: str = typer.Option(..., "--window", "-w", help="The window (counter) the enrolled workstation serves."),
    unit: str | None = typer.Option(None, "--unit", help="The unit (进驻部门) of that window."),
    expires: str = typer.Option("7d", "--expires", help="How long the token is valid: 30m, 12h, 7d, 2w."),
    uses: int = typer.Option(1, "--uses", help="How many workstations may enrol with it."),
    note: str = typer.Option("", "--note", help="A note for the token list."),
    as_json: bool = JsonOption,
) -> None:
    """Make an enrolment token; it is printed once and cannot be shown again."""
    created = _service().create(
        window, unit, expires_in=parse_duration(expires), max_uses=uses, created_by=_whoami(), note=note
    )
    settings = context.settings()
    command = (
        f"counterguard-agent enroll --controller {enroll_address(settings)} --token {created.token} "
        f"--ca-cert {ca_cert_path(settings)}"
    )
    if as_json:
        print_json({**to_jsonable(created), "enroll_command": command})
        return
    where = created.window + (f" (unit {created.unit})" if created.unit else "")
    count = "1 use" if created.max_uses == 1 else f"{created.max_uses} uses"
    typer.echo(
        f"Enrolment token {created.token_id} for window {where}, {count}, valid until {fmt(created.expires_at)}:"
    )
    typer.echo("")
    typer.echo(f"    {created.token}")
    typer.echo("")
    typer.echo("It is shown only this once; keep it secret. On the workstation, enrol with:")
    typer.echo(f"    {command}")


@token_app.command("list")
def list_tokens(
    show_all: bool = typer.Option(False, "--all", help="Also list expired, used-up and revoked tokens."),
    as_json: bool = JsonOption,
) -> None:
    """List enrolment tokens (never their secrets); by default only those still usable."""
    tokens = _service().list(include_expired=show_all)
    if as_json:
        print_json(tokens)
        return
    print_table(
        "Enrolment tokens" if show_all else "Usable enrolment tokens",
        ("id", "window", "unit", "uses", "expires (UTC)", "status", "note"),
        (
            (t.token_id, t.window, t.unit, f"{t.uses}/{t.max_uses}", minute(t.expires_at), t.status, t.note)
            for t in tokens
        ),
    )


def minute(moment: dt.datetime | None) -> str:
    """A compact UTC time for table cells, so narrow terminals do not cut the ids."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if moment else ""


@token_app.command("revoke")
def revoke(token_id: str = typer.Argument(..., metavar="ID", help="The token id (the part before the dot).")) -> None:
    """Make a token unusable; agents it already enrolled stay enrolled."""
    revoked = _service().revoke(token_id.partition(".")[0])
    typer.echo(
        f"Revoked enrolment token {revoked.token_id} (window {revoked.window}, used {revoked.uses}/{revoked.max_uses})."
    )


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
