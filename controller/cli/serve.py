"""``counterguard serve``: run the controller (gRPC on the agent and enrolment ports) until stopped."""

from __future__ import annotations

import dataclasses

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
    log_format: str | None = typer.Option(
        None, "--log-format", metavar="FORMAT", help="Log lines as text or json (one object per line); UTC times."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, metavar="N",
        help="Controller processes sharing the two ports (SO_REUSEPORT); one process uses one core (default 1).",
    ),
    reuse_port: bool | None = typer.Option(
        None, "--reuse-port/--no-reuse-port",
        help="Share the ports with other controllers started on purpose (implied by --workers above 1).",
    ),
) -> None:
    """Run the controller until SIGTERM or Ctrl-C."""
    from controller.logs import configure_logging
    from controller.server import serve

    settings = context.settings()
    settings = dataclasses.replace(
        settings,
        listen=settings.listen if listen is None else listen,
        enroll_listen=settings.enroll_listen if enroll_listen is None else enroll_listen,
        advertise_host=settings.advertise_host if advertise_host is None else advertise_host,
        log_format=settings.log_format if log_format is None else log_format,
        workers=settings.workers if workers is None else workers,
        reuse_port=settings.reuse_port if reuse_port is None else reuse_port,
    )
    configure_logging(settings.log_format)
    raise typer.Exit(serve(settings))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
