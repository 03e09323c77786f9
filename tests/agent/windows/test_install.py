"""``install`` and ``uninstall``: the exact sc.exe / reg.exe / icacls commands, their order, failures and rollback.

The plans are asserted as data; then carried out through the real ``subprocess`` runner against stand-in
``sc.exe``, ``reg.exe`` and ``icacls.exe`` programs on ``PATH`` (the OS boundary: they log their arguments and
exit with the Win32 error code a test chooses). The service's command line is split the way the Microsoft C
runtime splits it and the bootstrap inside is run for real by this machine's isolated base interpreter.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

import agent.config
from agent.cli import main
from agent.config import AgentConfig
from agent.windows import commands, paths
from agent.windows.install import (
    RUN_KEY,
    InstallError,
    Interpreter,
    carry_out,
    helper_command_line,
    install,
    install_plan,
    outside_program_files,
    run_process,
    service_command_line,
    start_step,
    uninstall_plan,
)
from agent.windows.service import DESCRIPTION

REPO = Path(__file__).resolve().parents[3]
VENV = r"C:\Program Files\CounterGuard\venv"
PC = Interpreter(executable=VENV + r"\Scripts\python.exe", base_executable=r"C:\Program Files\Python311\python.exe",
                 site_dirs=(VENV + r"\Lib\site-packages",))
SETTINGS = r"C:\ProgramData\CounterGuard"
STATE = SETTINGS + r"\agent"
CLI_ARGS = ["--state-dir", STATE]


def windows_argv(command_line: str) -> list[str]:
    """Split a command line as the Microsoft C runtime does (what ``python.exe`` and ``sc.exe`` see)."""
    args: list[str] = []
    current: list[str] = []
    in_arg = quoted = False
    i = 0
    while i < len(command_line):
        char = command_line[i]
        if char == "\\":
            run = len(command_line[i:]) - len(command_line[i:].lstrip("\\"))
            follows_quote = command_line[i + run:i + run + 1] == '"'
            current.append("\\" * (run // 2 if follows_quote else run))
            if follows_quote and run % 2:
                current.append('"')
                run += 1
            i += run
            in_arg = True
        elif char == '"':
            quoted, in_arg, i = not quoted, True, i + 1
        elif char in " \t" and not quoted:
            if in_arg:
                args.append("".join(current))
                current, in_arg = [], False
            i += 1
        else:
            current.append(char)
            in_arg, i = True, i + 1
    if in_arg:
        args.append("".join(current))
    return args


class Recorder:
    """A runner that records command lines and answers with scripted exit codes (by ``argv[:2]``)."""

    def __init__(self, codes: dict[tuple[str, str], int] | None = None) -> None:
        self.codes = codes or {}
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(tuple(argv))
        code = self.codes.get((argv[0], argv[1]), 0)
        return code, f"[SC] {argv[1]} FAILED {code}:\n\nsomething Windows said\n" if code else "[SC] SUCCESS\n"

    def verbs(self) -> list[str]:
        return [f"{argv[0]} {argv[1]}" for argv in self.calls]


@pytest.fixture(autouse=True)
def default_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``agent.toml`` is looked for when ``--config`` is not given: a temporary folder, not /etc."""
    path = tmp_path / "settings" / "agent.toml"
    monkeypatch.setattr(agent.config, "DEFAULT_CONFIG_FILE", path)
    return path


def test_the_install_plan_is_these_commands_in_this_order() -> None:
    plan = install_plan(PC, CLI_ARGS, STATE, SETTINGS)
    assert [step.argv for step in plan] == [
        ("icacls.exe", SETTINGS, "/setowner", "*S-1-5-32-544", "/T"),
        ("icacls.exe", SETTINGS, "/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F",
         "*S-1-5-32-545:(OI)(CI)RX"),
        ("icacls.exe", STATE, "/setowner", "*S-1-5-32-544", "/T"),
        ("icacls.exe", STATE, "/inheritance:r", "/grant:r", "*S-1-5-18:(OI)(CI)F", "*S-1-5-32-544:(OI)(CI)F"),
        ("sc.exe", "create", "CounterGuardAgent", "binPath=", service_command_line(PC, CLI_ARGS), "type=", "own",
         "start=", "auto", "obj=", "LocalSystem", "DisplayName=", "CounterGuard Agent"),
        ("sc.exe", "description", "CounterGuardAgent", DESCRIPTION),
        ("sc.exe", "failure", "CounterGuardAgent", "reset=", "86400",
         "actions=", "restart/5000/restart/5000/restart/60000"),
        ("sc.exe", "failureflag", "CounterGuardAgent", "1"),
        ("reg.exe", "add", r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Run", "/v", "CounterGuardSessionHelper",
         "/t", "REG_SZ", "/d", helper_command_line(PC, CLI_ARGS), "/f"),
    ]
    assert all(step.accept == {0} for step in plan)
    assert "窗口终端" in DESCRIPTION and "workstation agent" in DESCRIPTION
    assert start_step().argv == ("sc.exe", "start", "CounterGuardAgent")


def test_the_service_runs_the_real_python_isolated_with_the_agents_site_packages() -> None:
    argv = windows_argv(service_command_line(PC, CLI_ARGS))
    assert argv[:4] == [r"C:\Program Files\Python311\python.exe", "-I", "-S", "-c"] and len(argv) == 5
    assert argv[4] == (
        "import site; site.addsitedir('C:\\\\Program Files\\\\CounterGuard\\\\venv\\\\Lib\\\\site-packages'); "
        "from agent.cli import main; "
        "raise SystemExit(main(['--state-dir', 'C:\\\\ProgramData\\\\CounterGuard\\\\agent', 'service']))")


def test_the_session_helper_runs_windowless_beside_the_agents_python() -> None:
    argv = windows_argv(helper_command_line(PC, ["--config", r"C:\ProgramData\CounterGuard\agent.toml"]))
    assert argv[:3] == [VENV + r"\Scripts\pythonw.exe", "-I", "-c"]
    assert argv[3] == ("from agent.cli import main; "
                       "raise SystemExit(main(['--config', 'C:\\\\ProgramData\\\\CounterGuard\\\\agent.toml', "
                       "'session-helper']))")


def test_quotes_and_spaces_survive_the_command_line() -> None:
    odd = Interpreter(executable=r"C:\Users\O'Brien\py env\Scripts\python.exe",
                      base_executable=r"C:\Python 3\python.exe", site_dirs=(r'C:\a "quoted"\site-packages\\',))
    argv = windows_argv(service_command_line(odd, ["--state-dir", "D:\\state dir\\"]))
    assert argv[0] == r"C:\Python 3\python.exe"
    calls = [node for node in ast.walk(ast.parse(argv[4])) if isinstance(node, ast.Call)]
    assert [ast.literal_eval(call.args[0]) for call in calls if isinstance(call.args[0], ast.Constant | ast.List)] == [
        r'C:\a "quoted"\site-packages\\', ["--state-dir", "D:\\state dir\\", "service"]]


def test_the_bootstrap_runs_the_cli_from_an_isolated_base_interpreter(tmp_path: Path) -> None:
    here = Interpreter.current()
    assert here.base_executable != sys.executable  # this test runs in a virtual environment, like many PCs will
    argv = windows_argv(service_command_line(here, ["--state-dir", str(tmp_path)]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COUNTERGUARD_"))}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    # agent and its dependencies were found through addsitedir alone; off Windows `service` says so in one sentence
    assert done.returncode == 1, done.stderr
    assert done.stderr == ("error: `counterguard-agent service` is for Windows; on Linux install the "
                           "counterguard-agent .deb (`make deb`), whose systemd unit runs the agent\n")


def test_a_python_outside_program_files_is_named() -> None:
    program_files = [r"C:\Program Files", r"C:\Program Files (x86)"]
    assert outside_program_files(PC, program_files) == []
    per_user = Interpreter(r"C:\Users\li\venv\Scripts\python.exe",
                           r"C:\Users\li\AppData\Local\Programs\Python311\python.exe",
                           (r"C:\Users\li\venv\Lib\site-packages",))
    assert outside_program_files(per_user, program_files) == [per_user.base_executable, *per_user.site_dirs]
    assert outside_program_files(Interpreter("", r"c:\program files (x86)\python\python.exe", ()), program_files) == []
    assert outside_program_files(Interpreter("", r"C:\Program Files Evil\python.exe", ()), program_files) != []


def args(command: str, **extra: object) -> argparse.Namespace:
    return argparse.Namespace(command=command, config=None, state_dir=None, start=False, **extra)


def test_install_creates_the_folders_and_carries_out_the_plan(agent_config: AgentConfig, default_settings_file: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ProgramFiles", r"C:\Program Files")
    runner = Recorder()
    assert commands.run(agent_config, args("install"), platform="win32", runner=runner, interpreter=PC) == 0
    assert agent_config.state_dir.is_dir() and default_settings_file.parent.is_dir()
    state = str(agent_config.state_dir.absolute())
    plan = install_plan(PC, ["--state-dir", state], state, str(default_settings_file.parent))
    assert runner.calls == [step.argv for step in plan]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "done: make Administrators the owner of the settings folder"
    assert out[-2] == ("installed: the service CounterGuardAgent runs at the next boot "
                       "(or `sc start CounterGuardAgent`); the session helper starts at each logon")
    assert out[-1].startswith("not enrolled yet: run `counterguard-agent enroll ...` here")


def test_install_start_and_a_given_config_file(agent_config: AgentConfig, capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    runner = Recorder()
    config_file = tmp_path / "agent.toml"
    namespace = args("install")
    namespace.start, namespace.config = True, config_file
    commands.run(agent_config, namespace, platform="win32", runner=runner, interpreter=PC)
    state = str(agent_config.state_dir.absolute())
    assert runner.calls[0] == ("icacls.exe", state, "/setowner", "*S-1-5-32-544", "/T")  # the state folder only
    assert str(tmp_path) not in {argv[1] for argv in runner.calls if argv[0] == "icacls.exe"}
    assert runner.verbs()[-1] == "sc.exe start"
    create = next(argv for argv in runner.calls if argv[:2] == ("sc.exe", "create"))
    assert f"main(['--config', {str(config_file)!r}, '--state-dir'" in create[4]
    out = capsys.readouterr().out
    assert f"warning: {config_file} is read by the service as LocalSystem; make sure only administrators" in out
    assert "warning: C:\\Program Files\\Python311\\python.exe is outside Program Files" in out  # no %ProgramFiles% here
    assert "runs now and at every boot" in out


def test_a_drive_root_is_never_locked_down() -> None:
    with pytest.raises(InstallError, match=r"^D:\\ is the root of a drive: the state folder must be a folder of "
                                           r"the agent's own$"):
        install_plan(PC, CLI_ARGS, "D:\\", SETTINGS)
    with pytest.raises(InstallError, match="the settings folder must be"):
        install_plan(PC, CLI_ARGS, STATE, "C:")


def test_an_installed_service_is_not_installed_twice(agent_config: AgentConfig) -> None:
    runner = Recorder({("sc.exe", "create"): 1073})
    with pytest.raises(InstallError, match=r"^the service CounterGuardAgent is already installed; run "
                                           r"`counterguard-agent uninstall` first$"):
        commands.run(agent_config, args("install"), platform="win32", runner=runner, interpreter=PC)
    assert runner.verbs()[-2:] == ["icacls.exe " + str(agent_config.state_dir.absolute()), "sc.exe create"]


def test_without_administrator_rights_nothing_is_changed(agent_config: AgentConfig,
                                                          default_settings_file: Path) -> None:
    runner = Recorder({("icacls.exe", str(default_settings_file.parent)): 5})
    with pytest.raises(InstallError, match=r"^cannot make Administrators the owner of the settings folder: "
                                           r"access denied; run it from an administrator command prompt$"):
        commands.run(agent_config, args("install"), platform="win32", runner=runner, interpreter=PC)
    assert len(runner.calls) == 1


def test_a_failure_after_the_service_was_created_removes_it_again() -> None:
    runner = Recorder({("sc.exe", "failureflag"): 87})
    with pytest.raises(InstallError) as failed:
        install(install_plan(PC, CLI_ARGS, STATE, SETTINGS), runner)
    assert str(failed.value) == (
        "cannot apply the restarts when the service stops with an error: `sc.exe failureflag CounterGuardAgent 1` "
        "exited with 87 (something Windows said); the service was removed again")
    assert runner.verbs() == [*["icacls.exe " + SETTINGS] * 2, *["icacls.exe " + STATE] * 2,
                              "sc.exe create", "sc.exe description", "sc.exe failure", "sc.exe failureflag",
                              "sc.exe stop", "sc.exe delete", "reg.exe delete", "reg.exe delete"]


def test_a_service_that_does_not_start_stays_installed(agent_config: AgentConfig) -> None:
    runner = Recorder({("sc.exe", "start"): 1053})
    namespace = args("install")
    namespace.start = True
    with pytest.raises(InstallError, match=r"^the service is installed but did not start: cannot start the service "
                                           r"CounterGuardAgent: `sc.exe start CounterGuardAgent` exited with 1053"):
        commands.run(agent_config, namespace, platform="win32", runner=runner, interpreter=PC)
    assert "sc.exe delete" not in runner.verbs()


def test_uninstall_removes_service_and_helper_and_is_fine_when_they_are_gone(
        agent_config: AgentConfig, capsys: pytest.CaptureFixture[str]) -> None:
    plan = uninstall_plan()
    assert [step.argv for step in plan] == [
        ("sc.exe", "stop", "CounterGuardAgent"),
        ("sc.exe", "delete", "CounterGuardAgent"),
        ("reg.exe", "delete", RUN_KEY, "/v", "CounterGuardSessionHelper", "/f"),
        ("reg.exe", "delete", r"HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\CounterGuardAgent",
         "/f"),
    ]
    gone = Recorder({("sc.exe", "stop"): 1060, ("sc.exe", "delete"): 1060, ("reg.exe", "delete"): 1})
    assert commands.run(agent_config, args("uninstall"), platform="win32", runner=gone) == 0
    assert capsys.readouterr().out.splitlines()[-1] == ("uninstalled; the state folder (enrolment, outbox) stays "
                                                        "until you delete it")
    with pytest.raises(InstallError, match=r"^cannot stop the service CounterGuardAgent: access denied"):
        carry_out(plan, Recorder({("sc.exe", "stop"): 5}))


@pytest.fixture
def windows_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``sc.exe``, ``reg.exe`` and ``icacls.exe`` stand-ins on PATH; each call appends its argv to ``calls.jsonl``."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    script = (f"#!{sys.executable}\nimport json, os, sys\n"
              f"name = os.path.basename(sys.argv[0])\n"
              f"with open({str(log)!r}, 'a', encoding='utf-8') as f:\n"
              f"    f.write(json.dumps([name, *sys.argv[1:]], ensure_ascii=False) + '\\n')\n"
              f"code = json.loads(os.environ.get('FAKE_CODES', '{{}}')).get(name + ' ' + sys.argv[1], 0)\n"
              f"print(f'[SC] {{sys.argv[1]}} FAILED {{code}}:' if code else '[SC] SUCCESS')\n"
              f"print('拒绝访问。' if code == 5 else '', file=sys.stderr)\n"
              f"sys.exit(code)\n")
    for name in ("sc.exe", "reg.exe", "icacls.exe"):
        (bin_dir / name).write_text(script, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def logged(log: Path) -> list[tuple[str, ...]]:
    return [tuple(json.loads(line)) for line in log.read_text(encoding="utf-8").splitlines()]


def test_the_real_runner_hands_every_argument_over_intact(windows_tools: Path) -> None:
    plan = install_plan(PC, CLI_ARGS, STATE, SETTINGS)
    install(plan, run_process)
    assert logged(windows_tools) == [step.argv for step in plan]  # the description's Chinese, binPath's quotes


def test_the_real_runner_reports_what_the_program_said(windows_tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CODES", json.dumps({"sc.exe delete": 87}))  # below 256: a POSIX exit status
    with pytest.raises(InstallError, match=r"^cannot delete the service CounterGuardAgent: `sc.exe delete "
                                           r"CounterGuardAgent` exited with 87 \(\[SC\] delete FAILED 87:\)$"):
        carry_out(uninstall_plan(), run_process)
    assert [argv[1] for argv in logged(windows_tools)] == ["stop", "delete"]
    with pytest.raises(InstallError, match=r"^no-such-tool.exe not found: install and uninstall run on Windows"):
        run_process(["no-such-tool.exe", "x"])


def test_on_linux_the_windows_commands_point_to_the_deb(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for command in ("install", "uninstall", "service"):
        assert main(["--state-dir", str(tmp_path), command]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (f"error: `counterguard-agent {command}` is for Windows; on Linux install the "
                                f"counterguard-agent .deb (`make deb`), whose systemd unit runs the agent\n")
    assert not list(tmp_path.iterdir())  # nothing made


def test_the_console_script_lists_the_windows_commands() -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "counterguard-agent"), "--help"], capture_output=True,
                          text=True, timeout=60, check=True)
    assert "install" in done.stdout and "uninstall" in done.stdout and "service" in done.stdout


def test_windows_keeps_the_agents_files_under_programdata() -> None:
    environ = {"ProgramData": r"D:\ProgramData"}
    assert paths.state_dir(environ) == r"D:\ProgramData\CounterGuard\agent"
    assert paths.config_file(environ) == r"D:\ProgramData\CounterGuard\agent.toml"
    assert paths.state_dir({"ALLUSERSPROFILE": r"E:\PD"}) == r"E:\PD\CounterGuard\agent"
    assert paths.state_dir({}) == r"C:\ProgramData\CounterGuard\agent"


def test_nothing_of_pywin32_is_loaded_off_windows() -> None:
    code = ("import sys, agent.cli, agent.windows.commands, agent.windows.install, agent.windows.service, "
            "agent.windows.paths, agent.collectors._removable_windows\n"
            "bad = {'servicemanager', 'win32service', 'win32serviceutil', 'pywintypes', 'pythoncom', 'win32com',"
            " 'winreg'}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                          timeout=60)
    assert done.stdout.strip() == "[]"

