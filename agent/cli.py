"""``counterguard-agent``: enrol this workstation, run the service, show its status.

Usage::

    counterguard-agent [--config FILE] [--state-dir DIR] enroll --controller HOST:PORT --token T \
                       --ca-cert FILE [--hostname NAME] [--force]
    counterguard-agent [--config FILE] [--state-dir DIR] run [--once]
    counterguard-agent [--config FILE] [--state-dir DIR] status [--json]
    counterguard-agent [--config FILE] [--state-dir DIR] session-helper   (in each user's session, at logon)
    counterguard-agent [--config FILE] [--state-dir DIR] install [--start] | uninstall | service   (Windows)

argparse only, and each command imports what it needs when it runs, to keep the service small.
Errors print ``error: <message>`` on stderr and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import AgentConfig, load_config
from agent.errors import AgentError
from agent.windows.commands import COMMANDS as WINDOWS_COMMANDS
from agent.windows.commands import add_commands as add_windows_commands
from agent.windows.commands import run as run_windows_command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="counterguard-agent", description="CounterGuard workstation agent.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML settings file (default $COUNTERGUARD_AGENT_CONFIG, else /etc/counterguard/agent.toml)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="where the key, certificates and outbox live")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enroll = commands.add_parser("enroll", help="enrol this workstation with a controller")
    enroll.add_argument("--controller", required=True, metavar="HOST:PORT", help="the controller's enrolment address")
    enroll.add_argument("--token", required=True, help="the enrolment token an admin created")
    enroll.add_argument("--ca-cert", required=True, type=Path, metavar="FILE", help="the controller's CA certificate")
    enroll.add_argument("--hostname", help="the name to enrol under (default: this host's name)")
    enroll.add_argument("--force", action="store_true", help="replace an existing enrolment")

    run = commands.add_parser("run", help="run the agent service")
    run.add_argument("--once", action="store_true", help="report the start-up facts, send until empty, exit")

    status = commands.add_parser("status", help="show the enrolment and the outbox")
    status.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("session-helper", help="run in a user's session: show notices, tell the agent about "
                        "input idleness and the foreground window (started at logon)")
    add_windows_commands(commands)
    return parser


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)sZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _enroll(config: AgentConfig, args: argparse.Namespace) -> int:
    from agent.enroll import enroll

    enrollment = enroll(args.controller, args.token, args.ca_cert, config.state_dir, args.hostname,
                        force=args.force, timeout=config.rpc_timeout_seconds)
    print(f"enrolled as {enrollment.agent_id} (window {enrollment.window or '-'}); "
          f"reports go to {enrollment.report_address}")
    return 0


def _run(config: AgentConfig, args: argparse.Namespace, platform: str = sys.platform) -> int:
    from agent import selflimit
    from agent.logs import log_to_file
    from agent.service import AgentService

    selflimit.lower_priority()  # before any thread starts: threads inherit it
    if platform == "win32":  # the WMI probes run on the agent's threads, as under the service
        from agent.windows.service import enter_multithreaded_apartment

        enter_multithreaded_apartment()
    log_to_file(config)
    service = AgentService(config)
    try:
        if args.once:
            delivered = service.run_once()
            print(f"delivered {delivered} facts to {service.transport.enrollment.report_address}")
            return 0
        return service.run()
    finally:
        service.close()
        if service.restart_requested:
            selflimit.reexec()


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; returns the exit code."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC's own chatter would drown our messages
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, overrides={"state_dir": args.state_dir})
        _setup_logging(config.log_level)
        if args.command == "enroll":
            return _enroll(config, args)
        if args.command == "run":
            return _run(config, args)
        if args.command == "session-helper":
            from agent.session.helper import run_session_helper

            return run_session_helper(config.run_dir)
        if args.command in WINDOWS_COMMANDS:
            return run_windows_command(config, args)
        return _status(config, args)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a state directory we may not read or write, a full disk
        print(f"error: {exc.filename or 'the agent'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------ status


def status_report(config: AgentConfig) -> dict[str, Any]:
    """What ``status`` shows, as plain data: the enrolment, the outbox and the running agent (never creating any)."""
    from agent.enroll import load_enrollment
    from agent.errors import NotEnrolledError
    from agent.status_file import read_status

    report: dict[str, Any] = {"state_dir": str(config.state_dir), "enrolled": False}
    try:
        enrollment = load_enrollment(config.state_dir)
    except NotEnrolledError as exc:
        report["not_enrolled_reason"] = str(exc)
    else:
        report.update(enrolled=True, agent_id=enrollment.agent_id, window=enrollment.window,
                      controller=enrollment.report_address, enrolled_via=enrollment.controller,
                      enrolled_at=enrollment.enrolled_at.isoformat())
    report["outbox"] = _outbox_report(config) if config.outbox_path.exists() else None
    report["agent"] = read_status(config.status_path, dt.datetime.now(dt.UTC))  # resource use, shed work
    return report


def _outbox_report(config: AgentConfig) -> dict[str, Any]:
    from agent.outbox import Outbox
    from agent.transport import LAST_REPORT_AT

    with Outbox(config.outbox_path, max_facts=config.outbox_max_facts) as outbox:
        stats = outbox.stats()
        last_report = outbox.get_meta(LAST_REPORT_AT)
    return {
        "depth": stats.depth,
        "oldest_sequence": stats.oldest_sequence,
        "oldest_observed_at": stats.oldest_observed_at.isoformat() if stats.oldest_observed_at else None,
        "next_sequence": stats.next_sequence,
        "set_aside": stats.set_aside,
        "set_aside_reason": stats.set_aside_reason or None,
        "dropped": stats.dropped,
        "last_report_at": last_report,
    }


def _status(config: AgentConfig, args: argparse.Namespace) -> int:
    from agent.status_file import describe

    report = status_report(config)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    if report["enrolled"]:
        window = report["window"] or "-"
        print(f"enrolled:      yes, as {report['agent_id']} (window {window}) at {report['enrolled_at']}")
        print(f"controller:    {report['controller']} (enrolled via {report['enrolled_via']})")
    else:
        print(f"enrolled:      no ({report['not_enrolled_reason']})")
    print("\n".join(describe(report["agent"])))
    box = report["outbox"]
    if box is None:
        print(f"outbox:        none yet ({config.outbox_path})")
        return 0
    oldest = f", oldest #{box['oldest_sequence']} observed {box['oldest_observed_at']}" if box["depth"] else ""
    dropped = ", ".join(f"{kind}={count}" for kind, count in sorted(box["dropped"].items())) or "none"
    print(f"outbox:        {box['depth']} facts waiting{oldest}; next sequence {box['next_sequence']}")
    reason = f" (last reason: {box['set_aside_reason']})" if box["set_aside"] else ""
    print(f"set aside:     {box['set_aside']}{reason}")
    print(f"dropped:       {dropped}")
    print(f"last report:   {box['last_report_at'] or 'never'}")
    return 0
