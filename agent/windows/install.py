"""Installing the agent on a Windows PC: what ``install`` and ``uninstall`` do, as data first, then done.

:func:`install_plan` lists every step as the exact command line it runs:

1. ``icacls`` on the settings folder (the agent's own, holding ``agent.toml``) and the state folder: Administrators
   own them (a folder a user created beforehand in ``%ProgramData%`` would otherwise stay theirs), inheritance is
   off, LocalSystem and Administrators have full control, and users may only read the settings (the session
   helper reads them) and nothing in the state folder (the agent's private key). Accounts are named by SID,
   so a localised Windows reads them the same;
2. ``sc.exe create CounterGuardAgent`` (own process, LocalSystem, started at boot) running
   :func:`service_command_line`; ``sc.exe description`` in Chinese and English;
3. ``sc.exe failure`` (restart after 5 s, 5 s, then every 60 s; the count resets after a day) and
   ``sc.exe failureflag 1`` (also when the service stops with an error, which is how it reports "not enrolled");
4. ``reg.exe add`` of the per-machine Run value ``CounterGuardSessionHelper``: Windows starts
   :func:`helper_command_line` in every user's session at logon (``pythonw.exe``, so no console window). A Run
   value rather than a logon task: it needs no task XML, runs in each session with that user's rights, and is
   what a service in session 0 cannot do itself. Sessions open before the install get their helper at their
   next logon. ``reg.exe`` has Python's bitness, so add and delete use the same registry view (a 32-bit Python
   on 64-bit Windows writes ``WOW6432Node``'s Run key, which Windows runs as well);
5. with ``--start``, ``sc.exe start`` (:func:`start_step`; a service that does not start stays installed).

The service runs the real ``python.exe`` of the installation (a virtual environment's ``python.exe`` is a
launcher that starts another process, which the SCM cannot talk to), isolated (``-I -S``) and given this
installation's site-packages folders explicitly, so a virtual environment works as well as a plain Python.

:func:`carry_out` runs steps through a runner (``subprocess`` by default; tests give a recording one). A step
fails when its exit code is not among those it accepts (``sc.exe`` exits with the Win32 error code); a failed
install removes what it had made, and the error says which step failed, how, and what to do.
:func:`uninstall_plan` stops and deletes the service, the Run value and the service's event-log source; it
leaves the state folder (enrolment, outbox), which an administrator deletes to forget the enrolment.
"""

from __future__ import annotations

import locale
import ntpath
import os
import site
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from agent.errors import AgentError
from agent.windows.service import DESCRIPTION, DISPLAY_NAME, SERVICE_NAME

RUN_KEY = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Run"
# Where pywin32 registers the service's event-log source when it first writes to the Application log.
EVENT_SOURCE_KEY = rf"HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\{SERVICE_NAME}"
HELPER_VALUE = "CounterGuardSessionHelper"
FAILURE_RESET_SECONDS = 86400
FAILURE_ACTIONS = "restart/5000/restart/5000/restart/60000"
ADMINISTRATORS = "*S-1-5-32-544"
# Inherited by files and folders: full control for LocalSystem (S-1-5-18) and Administrators; users (S-1-5-32-545)
# read the settings folder only.
STATE_DIR_GRANTS = ("*S-1-5-18:(OI)(CI)F", f"{ADMINISTRATORS}:(OI)(CI)F")
CONFIG_DIR_GRANTS = (*STATE_DIR_GRANTS, "*S-1-5-32-545:(OI)(CI)RX")
ERROR_ACCESS_DENIED = 5
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_SERVICE_EXISTS = 1073
_STEP_TIMEOUT_SECONDS = 120

Runner = Callable[[Sequence[str]], tuple[int, str]]
"""Runs one command line; returns its exit code and its output (stdout and stderr)."""


class InstallError(AgentError):
    """A step of ``install`` or ``uninstall`` failed; the message names the step and what to do."""


@dataclass(frozen=True)
class Interpreter:
    """The Python installation the agent runs from, in the terms the service needs (Windows paths)."""

    executable: str  # sys.executable: in a virtual environment, the launcher in its Scripts folder
    base_executable: str  # the real python.exe behind it
    site_dirs: tuple[str, ...]  # the site-packages folders holding the agent and its dependencies

    @classmethod
    def current(cls) -> Interpreter:
        """This Python (a virtual environment's ``site.getsitepackages()`` also lists its root: left out)."""
        base = getattr(sys, "_base_executable", "") or sys.executable
        folders = [path for path in site.getsitepackages() if os.path.basename(path).lower() == "site-packages"]
        return cls(sys.executable, base, tuple(folders))


@dataclass(frozen=True)
class Step:
    """One command of a plan: what it does (for messages), its command line, the exit codes that mean done."""

    what: str
    argv: tuple[str, ...]
    accept: frozenset[int] = field(default=frozenset({0}))


def _cli_call(site_dirs: Iterable[str], cli_args: Sequence[str]) -> str:
    """Python source that adds the site folders (with their ``.pth`` files) and runs the agent's CLI."""
    adds = "".join(f"site.addsitedir({path!r}); " for path in site_dirs)
    run = f"from agent.cli import main; raise SystemExit(main({list(cli_args)!r}))"
    return f"import site; {adds}{run}" if adds else run


def service_command_line(interpreter: Interpreter, cli_args: Sequence[str]) -> str:
    """The service's command line: the real ``python.exe``, isolated, running ``counterguard-agent … service``."""
    code = _cli_call(interpreter.site_dirs, [*cli_args, "service"])
    return subprocess.list2cmdline([interpreter.base_executable, "-I", "-S", "-c", code])


def helper_command_line(interpreter: Interpreter, cli_args: Sequence[str]) -> str:
    """The Run value: ``pythonw.exe`` beside the agent's Python, running ``counterguard-agent … session-helper``."""
    pythonw = ntpath.join(ntpath.dirname(interpreter.executable), "pythonw.exe")
    return subprocess.list2cmdline([pythonw, "-I", "-c", _cli_call((), [*cli_args, "session-helper"])])


def outside_program_files(interpreter: Interpreter, program_files: Sequence[str]) -> list[str]:
    """The interpreter files and site folders not under a Program Files folder.

    The service runs them as LocalSystem, so anyone who may change them owns the PC; folders under Program
    Files are writable by administrators only, a per-user Python or ``C:\\PythonXY`` usually is not.
    """
    roots = [ntpath.normcase(root.rstrip("\\")) + "\\" for root in program_files if root]
    paths = [interpreter.base_executable, *interpreter.site_dirs]
    return [path for path in paths if not any(ntpath.normcase(path).startswith(root) for root in roots)]


def _secure(folder: str, what: str, grants: Sequence[str]) -> list[Step]:
    if not ntpath.splitdrive(folder)[1].strip("\\/"):
        raise InstallError(f"{folder} is the root of a drive: the {what} must be a folder of the agent's own")
    return [
        Step(f"make Administrators the owner of the {what}", ("icacls.exe", folder, "/setowner", ADMINISTRATORS, "/T")),
        Step(f"restrict the {what}", ("icacls.exe", folder, "/inheritance:r", "/grant:r", *grants)),
    ]


def install_plan(interpreter: Interpreter, cli_args: Sequence[str], state_dir: str,
                 config_dir: str | None = None) -> list[Step]:
    """Every step of ``install`` but the start, in order (see the module docstring).

    ``config_dir``: the settings folder to secure, the agent's own (``%ProgramData%\\CounterGuard``); ``None``
    for settings elsewhere, whose folder is left as it is.
    """
    sc = "sc.exe"
    return [
        *(_secure(config_dir, "settings folder", CONFIG_DIR_GRANTS) if config_dir is not None else []),
        *_secure(state_dir, "state folder", STATE_DIR_GRANTS),
        Step(f"create the service {SERVICE_NAME}",
             (sc, "create", SERVICE_NAME, "binPath=", service_command_line(interpreter, cli_args),
              "type=", "own", "start=", "auto", "obj=", "LocalSystem", "DisplayName=", DISPLAY_NAME)),
        Step("describe the service", (sc, "description", SERVICE_NAME, DESCRIPTION)),
        Step("set the service to restart after a failure",
             (sc, "failure", SERVICE_NAME, "reset=", str(FAILURE_RESET_SECONDS), "actions=", FAILURE_ACTIONS)),
        Step("apply the restarts when the service stops with an error", (sc, "failureflag", SERVICE_NAME, "1")),
        Step("start the session helper at every logon",
             ("reg.exe", "add", RUN_KEY, "/v", HELPER_VALUE, "/t", "REG_SZ",
              "/d", helper_command_line(interpreter, cli_args), "/f")),
    ]


def start_step() -> Step:
    """``install --start``: start the service now rather than at the next boot."""
    return Step(f"start the service {SERVICE_NAME}", ("sc.exe", "start", SERVICE_NAME))


def uninstall_plan() -> list[Step]:
    """Every step of ``uninstall``; each is done also when there is nothing left to undo."""
    sc = "sc.exe"
    return [
        Step(f"stop the service {SERVICE_NAME}", (sc, "stop", SERVICE_NAME),
             frozenset({0, ERROR_SERVICE_NOT_ACTIVE, ERROR_SERVICE_DOES_NOT_EXIST})),
        Step(f"delete the service {SERVICE_NAME}", (sc, "delete", SERVICE_NAME),
             frozenset({0, ERROR_SERVICE_DOES_NOT_EXIST})),
        # reg.exe exits 1 for any failure; a missing value or key is the only one left once sc.exe got through.
        Step("remove the session helper from logon",
             ("reg.exe", "delete", RUN_KEY, "/v", HELPER_VALUE, "/f"), frozenset({0, 1})),
        Step("remove the service's event-log source", ("reg.exe", "delete", EVENT_SOURCE_KEY, "/f"),
             frozenset({0, 1})),
    ]


def run_process(argv: Sequence[str]) -> tuple[int, str]:
    """Run a command line and wait for it; its output decoded from the console code page."""
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=_STEP_TIMEOUT_SECONDS, check=False)
    except FileNotFoundError:
        raise InstallError(f"{argv[0]} not found: install and uninstall run on Windows, from a command prompt") \
            from None
    except subprocess.TimeoutExpired:
        raise InstallError(f"{subprocess.list2cmdline(argv)} did not finish within {_STEP_TIMEOUT_SECONDS}s") \
            from None
    encoding = "oem" if sys.platform == "win32" else locale.getpreferredencoding(False)
    return done.returncode, (done.stdout + done.stderr).decode(encoding, errors="replace")


def _failure(step: Step, code: int, output: str) -> InstallError:
    if code == ERROR_ACCESS_DENIED:
        return InstallError(f"cannot {step.what}: access denied; run it from an administrator command prompt")
    if code == ERROR_SERVICE_EXISTS:
        return InstallError(f"the service {SERVICE_NAME} is already installed; run `counterguard-agent uninstall` "
                            f"first")
    said = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
    return InstallError(f"cannot {step.what}: `{subprocess.list2cmdline(step.argv)}` exited with {code} ({said})")


def carry_out(steps: Sequence[Step], runner: Runner = run_process,
              done: Callable[[Step], None] = lambda step: None) -> None:
    """Run the steps in order, calling ``done`` after each; :class:`InstallError` at the first that fails."""
    for step in steps:
        code, output = runner(step.argv)
        if code not in step.accept:
            raise _failure(step, code, output)
        done(step)


def install(steps: Sequence[Step], runner: Runner = run_process,
            done: Callable[[Step], None] = lambda step: None) -> None:
    """Carry out an install plan; when a step fails after the service was created, remove it and the Run value."""
    finished: list[Step] = []

    def record(step: Step) -> None:
        finished.append(step)
        done(step)

    try:
        carry_out(steps, runner, record)
    except InstallError as exc:
        if not any(step.argv[:2] == ("sc.exe", "create") for step in finished):
            raise
        try:
            carry_out(uninstall_plan(), runner)
        except InstallError as cleanup:
            raise InstallError(f"{exc}; removing the half-installed service failed too: {cleanup}") from None
        raise InstallError(f"{exc}; the service was removed again") from None
