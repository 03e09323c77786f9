"""``counterguard agents list | show | revoke``: the enrolled workstations and their certificates."""

from __future__ import annotations

import textwrap

import typer

from controller.agents import AgentDirectory
from controller.cli import context
from controller.cli.output import JsonOption, print_fields, print_json, print_table
from controller.cli.tokens import minute

agents_app = typer.Typer(help="List, inspect and revoke enrolled agents.", no_args_is_help=True)


def _directory() -> AgentDirectory:
    return AgentDirectory(context.engine())


@agents_app.command("list")
def list_agents(as_json: bool = JsonOption) -> None:
    """Every enrolled agent, revoked ones included."""
    agents = _directory().list()
    if as_json:
        print_json(agents)
        return
    print_table(
        "Agents",
        ("agent", "hostname", "window", "last seen (UTC)", "seq", "outbox", "revoked"),
        (
            (a.id, a.hostname, a.window, minute(a.last_seen_at) or "never", a.last_sequence,
             "" if a.outbox_depth is None else a.outbox_depth, a.revoked)
            for a in agents
        ),
    )


@agents_app.command("show")
def show(agent_id: str = typer.Argument(..., metavar="ID"), as_json: bool = JsonOption) -> None:
    """One agent: identity, certificate, activity and revocation."""
    agent = _directory().get(agent_id)
    if as_json:
        print_json(agent)
        return
    print_fields(
        f"Agent {agent.id}",
        (
            ("hostname", agent.hostname),
            ("machine id", agent.machine_id),
            ("OS family", agent.os_family),
            ("agent version", agent.agent_version),
            ("window", agent.window),
            ("unit", agent.unit),
            ("enrolment token", agent.token_id),
            ("enrolled at", agent.enrolled_at),
            ("certificate serial", agent.cert_serial),
            # In groups, so a narrow terminal wraps it instead of cutting it off.
            ("certificate SHA-256", " ".join(textwrap.wrap(agent.cert_fingerprint, 16))),
            ("certificate expires", agent.cert_not_after),
            ("last seen", agent.last_seen_at or "never"),
            ("last sequence", agent.last_sequence),
            ("outbox at last report",
             "not reported" if agent.outbox_depth is None else f"{agent.outbox_depth} facts waiting"),
            (
                "revoked",
                f"{agent.revoked_at:%Y-%m-%d %H:%M:%S} UTC: {agent.revoked_reason or 'no reason given'}"
                if agent.revoked_at
                else "no",
            ),
        ),
    )


@agents_app.command("revoke")
def revoke(
    agent_id: str = typer.Argument(..., metavar="ID"),
    reason: str = typer.Option("", "--reason", "-r", help="Why (kept with the agent)."),
) -> None:
    """Refuse the agent's certificate from its next call on; its facts stay."""
    agent = _directory().revoke(agent_id, reason)
    typer.echo(
        f"Revoked agent {agent.id} ({agent.hostname or 'unknown host'}, window {agent.window}); "
        "its certificate is refused from its next call on."
    )


def register(app: typer.Typer) -> None:
    app.add_typer(agents_app, name="agents")
