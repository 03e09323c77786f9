"""Helpers that run real processes on loopback: a controller (`counterguard serve`) and agents (`counterguard-agent`).

Both are started through their console scripts from this virtual environment, with their own
data folders under ``tmp_path``; the controller binds port 0 and reports the ports it got.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERGUARD_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    env.update(extra or {})
    return env


@dataclass
class Controller:
    """A running ``counterguard serve`` and a way to run admin commands against its database."""

    data_dir: Path
    database_url: str | None
    process: subprocess.Popen[str]
    port: int = 0
    enroll_port: int = 0
    log: list[str] = field(default_factory=list)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        base = [str(BIN / "counterguard"), "--data-dir", str(self.data_dir)]
        if self.database_url:
            base += ["--db", self.database_url]
        result = subprocess.run([*base, *args], capture_output=True, text=True, env=_env(), timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"counterguard {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def token(self, window: str = "W01", **options: str) -> str:
        extra = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", v)]
        return self.json("token", "create", "--window", window, "--expires", "1d", *extra)["token"]

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "pki" / "ca.pem"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        """``kill -9``: no shutdown handler runs, whatever was in flight is cut off."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)

    @property
    def database_path(self) -> Path:
        """The embedded SQLite database (only when no ``database_url`` was given)."""
        return self.data_dir / "counterguard.db"


def restart_controller(previous: Controller) -> Controller:
    """Start a controller again on the ports and with the data folder (and database) of a stopped or killed one."""
    if previous.process.poll() is None:
        raise AssertionError("the previous controller is still running; stop or kill it first")
    return start_controller(previous.data_dir, previous.database_url, ports=(previous.port, previous.enroll_port))


def start_controller(
    data_dir: Path, database_url: str | None = None, ports: tuple[int, int] = (0, 0), env: dict[str, str] | None = None,
    serve_args: tuple[str, ...] = (),
) -> Controller:
    """Start ``counterguard serve`` on loopback (free ports unless given) and wait until it says where it listens.

    ``env`` adds environment variables for the controller only (e.g. the ``COUNTERGUARD_FAKE_NOW`` test hook);
    ``serve_args`` more options of ``serve`` (e.g. ``--workers 2``).
    """
    cmd = [str(BIN / "counterguard"), "--data-dir", str(data_dir)]
    if database_url:
        cmd += ["--db", database_url]
    cmd += ["serve", "--listen", f"127.0.0.1:{ports[0]}", "--enroll-listen", f"127.0.0.1:{ports[1]}", *serve_args]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(env))
    controller = Controller(data_dir=data_dir, database_url=database_url, process=process)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # keep reading so the controller never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            controller.log.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if "{" in line and "enroll_port" in line:
            info = json.loads(line[line.index("{"):])
            controller.port, controller.enroll_port = int(info["port"]), int(info["enroll_port"])
            return controller
    controller.stop()
    raise AssertionError("the controller did not report its ports:\n" + "".join(controller.log))


@dataclass
class Agent:
    """``counterguard-agent`` with its own state folder and settings given as environment variables."""

    state_dir: Path
    settings: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        # Each agent listens for session helpers in its own folder: agents of one test run must not share one.
        settings = {"run_dir": str(self.state_dir.parent / f"{self.state_dir.name}.run"), **self.settings}
        return _env({f"COUNTERGUARD_AGENT_{k.upper()}": v for k, v in settings.items()})

    def command(self, *args: str) -> list[str]:
        return [str(BIN / "counterguard-agent"), "--state-dir", str(self.state_dir), *args]

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.command(*args), capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"counterguard-agent {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def enroll(self, controller: Controller, token: str) -> str:
        self.run("enroll", "--controller", f"127.0.0.1:{controller.enroll_port}", "--token", token,
                 "--ca-cert", str(controller.ca_cert))
        return str(json.loads((self.state_dir / "enrollment.json").read_text())["agent_id"])

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command("run"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=self.env())

    def start_logged(self, log: Path) -> subprocess.Popen[str]:
        """``run`` with its output appended to ``log``: an agent left running for long (retrying while the
        controller is down, logging a warning each time) would block on a full stderr pipe nobody reads."""
        with log.open("a", encoding="utf-8") as out:
            return subprocess.Popen(self.command("run"), stdout=out, stderr=subprocess.STDOUT, text=True,
                                    env=self.env())

    def status(self) -> dict[str, Any]:
        """``status --json``: the enrolment and the outbox (depth, next sequence, set aside, dropped)."""
        return dict(json.loads(self.run("status", "--json").stdout))


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.25, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
