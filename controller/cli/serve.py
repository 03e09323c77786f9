"""``counterguard serve``: run the controller (gRPC on the agent and enrolment ports) until stopped."""

from __future__ import annotations

import dataclasses
import logging

import typer

from controller.cli import context


def serve_command(
    listen: str | None = typer.Option(
        None, "--listen", metavar="ADDR", help="Agent port, mutual TLS (default 0.0.0.0:50051)."
    ),
    enroll_listen: str | None = typer.Option(
        None,
        "--enroll-listen",
        metavar="ADDR",
        help="Enrolment port, server-authenticated TLS (default 0.0.0.0:50052).",
    ),
    advertise_host: str | None = typer.Option(
        None,
        "--advertise-host",
        metavar="HOST",
        help="Host name agents should use for the agent port (default: the host they enrolled with).",
    ),
) -> None:
    """Run the controller until SIGTERM or Ctrl-C."""
    from controller.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = context.settings()
    settings = dataclasses.replace(
        settings,
        listen=settings.listen if listen is None else listen,
        enroll_listen=settings.enroll_listen if enroll_listen is None else enroll_listen,
        advertise_host=settings.advertise_host if advertise_host is None else advertise_host,
    )
    raise typer.Exit(serve(settings))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
