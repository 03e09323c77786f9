"""``counterguard-agent install [--start]``, ``uninstall`` and ``service``: the Windows commands of the CLI.

``install`` creates the agent's settings folder (unless ``--config`` names a file elsewhere, which it leaves as it
is, with a warning) and the state folder, and carries out :func:`agent.windows.install.install_plan` with ``--config`` (when given) and the
resolved state folder passed on to the service and the session helper, so they use exactly what was installed.
``service`` is the service process itself (:func:`agent.windows.service.host`). On any other platform each of
them stops with one sentence pointing to the Linux package.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.windows import install
from agent.windows.service import SERVICE_NAME

COMMANDS = ("install", "uninstall", "service")


def add_commands(commands: Any) -> None:
    """Add the three commands to the CLI's sub-parsers (``argparse`` ``_SubParsersAction``)."""
    command = commands.add_parser("install", help="Windows: install the agent service and the session helper "
                                                  "(administrator command prompt)")
    command.add_argument("--start", action="store_true", help="start the service now, not only at the next boot")
    commands.add_parser("uninstall", help="Windows: stop and remove the service and the session helper")
    commands.add_parser("service", help="Windows: the service process, as the Service Control Manager starts it")


def _cli_args(config: AgentConfig, args: argparse.Namespace) -> list[str]:
    given = ["--config", str(Path(args.config).absolute())] if args.config else []
    return [*given, "--state-dir", str(config.state_dir.absolute())]


def _install(config: AgentConfig, args: argparse.Namespace, runner: install.Runner,
             interpreter: install.Interpreter) -> int:
    program_files = [os.environ.get(name, "") for name in ("ProgramFiles", "ProgramFiles(x86)")]
    for path in install.outside_program_files(interpreter, program_files):
        print(f"warning: {path} is outside Program Files; the service runs it as LocalSystem, so make sure "
              f"only administrators can change it")
    config_dir = None if args.config else agent_config.DEFAULT_CONFIG_FILE.absolute().parent
    if args.config:
        print(f"warning: {Path(args.config).absolute()} is read by the service as LocalSystem; make sure only "
              f"administrators can change it")
    for folder in (config_dir, config.state_dir):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    plan = install.install_plan(interpreter, _cli_args(config, args), str(config.state_dir.absolute()),
                                str(config_dir) if config_dir else None)
    install.install(plan, runner, lambda step: print(f"done: {step.what}"))
    if args.start:
        try:
            install.carry_out([install.start_step()], runner, lambda step: print(f"done: {step.what}"))
        except install.InstallError as exc:
            raise install.InstallError(f"the service is installed but did not start: {exc}") from None
    when = "now and at every boot" if args.start else f"at the next boot (or `sc start {SERVICE_NAME}`)"
    print(f"installed: the service {SERVICE_NAME} runs {when}; the session helper starts at each logon")
    if not config.enrollment_path.exists():
        print("not enrolled yet: run `counterguard-agent enroll ...` here; until then the service stops and is "
              "restarted every minute")
    return 0


def _uninstall(runner: install.Runner) -> int:
    install.carry_out(install.uninstall_plan(), runner, lambda step: print(f"done: {step.what}"))
    print("uninstalled; the state folder (enrolment, outbox) stays until you delete it")
    return 0


def run(config: AgentConfig, args: argparse.Namespace, *, platform: str = sys.platform,
        runner: install.Runner = install.run_process, interpreter: install.Interpreter | None = None) -> int:
    """Carry out ``install``, ``uninstall`` or ``service``; returns the exit code."""
    if platform != "win32":
        raise AgentError(f"`counterguard-agent {args.command}` is for Windows; on Linux install the "
                         f"counterguard-agent .deb (`make deb`), whose systemd unit runs the agent")
    if args.command == "install":
        return _install(config, args, runner, interpreter or install.Interpreter.current())
    if args.command == "uninstall":
        return _uninstall(runner)
    from agent.windows.service import host

    return host(config)
