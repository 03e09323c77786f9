"""A real X server for the desktop-probe tests: Xvfb with a cookie, a window manager on request, clients.

``scripts/ensure-test-tools.sh`` (run by ``make test``) installs what this drives. When a tool is missing
the tests that need it FAIL with the reason, they never skip: a probe that was not run is not tested.
A test module that uses it binds the fixture: ``xserver = xserver_fixture``.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TOOLS = ("Xvfb", "xauth", "xdpyinfo", "xmessage", "xprop", "xwininfo", "xdotool")
LIBRARIES = ("libX11.so.6", "libXss.so.1")  # what the probes load with ctypes
_X11_SOCKETS = Path("/tmp/.X11-unix")


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def _free_display() -> int:
    """A display number with neither a lock file nor a socket."""
    for number in range(90, 400):
        if not Path(f"/tmp/.X{number}-lock").exists() and not (_X11_SOCKETS / f"X{number}").exists():
            return number
    raise RuntimeError("no free X display number between :90 and :399")


class XServer:
    """An Xvfb on a free display, protected by a cookie in its own Xauthority file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.xauthority = directory / "Xauthority"
        self.display = ""
        self.server: subprocess.Popen[bytes] | None = None
        self._clients: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment an X client on this display runs with."""
        return {**os.environ, "DISPLAY": self.display, "XAUTHORITY": str(self.xauthority)}

    @property
    def probe_environ(self) -> dict[str, str]:
        """What a probe is given as its environment to find this display (``DISPLAY`` and ``XAUTHORITY``)."""
        return {"DISPLAY": self.display, "XAUTHORITY": str(self.xauthority)}

    def start(self) -> XServer:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        missing += [lib for lib in LIBRARIES if not _loadable(lib)]
        if missing:
            pytest.fail(f"X11 test tools missing: {', '.join(missing)} (run scripts/ensure-test-tools.sh as root)")
        self.display = f":{_free_display()}"
        subprocess.run(["xauth", "-q", "-f", str(self.xauthority), "add", self.display, ".", secrets.token_hex(16)],
                       check=True)
        # -noreset: a bare Xvfb resets (and its idle counter with it) whenever its last client leaves, which a
        # probe's short connection is when no window is open; a desktop always has clients connected.
        self.server = subprocess.Popen(
            ["Xvfb", self.display, "-auth", str(self.xauthority), "-nolisten", "tcp", "-noreset",
             "-screen", "0", "800x600x24"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_up()
        return self

    def _wait_until_up(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.server is not None
            if self.server.poll() is not None:
                pytest.fail(f"Xvfb {self.display} exited with {self.server.returncode}")
            done = subprocess.run(["xdpyinfo"], check=False, env=self.env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
            if done.returncode == 0:
                return
            time.sleep(0.1)
        pytest.fail(f"Xvfb {self.display} did not come up within {timeout:g}s")

    def client(self, *argv: str) -> subprocess.Popen[bytes]:
        """Start an X client on this display (stopped with the server)."""
        process = subprocess.Popen(list(argv), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._clients.append(process)
        return process

    def run(self, *argv: str) -> str:
        """Run a tool against this display and return what it printed."""
        done = subprocess.run(list(argv), check=False, env=self.env, capture_output=True, text=True, timeout=20)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return done.stdout

    def window(self, title: str, *, pid_property: bool = True) -> tuple[int, subprocess.Popen[bytes]]:
        """A real ``xmessage`` window with this title; by default its ``_NET_WM_PID`` is set, as GTK and Qt do."""
        process = self.client("xmessage", "-title", title, "-center", "a window titled " + title)
        window = int(self.run("xdotool", "search", "--sync", "--limit", "1", "--name", f"^{title}$").split()[0])
        if pid_property:
            self.run("xprop", "-id", str(window), "-f", "_NET_WM_PID", "32c", "-set", "_NET_WM_PID", str(process.pid))
        return window, process

    def window_manager(self) -> None:
        """Start Openbox (EWMH: it keeps ``_NET_ACTIVE_WINDOW`` on the root window)."""
        if shutil.which("openbox") is None:
            pytest.fail("openbox missing (run scripts/ensure-test-tools.sh as root)")
        self.client("openbox", "--sm-disable")
        deadline = time.monotonic() + 10
        while "_NET_SUPPORTING_WM_CHECK(WINDOW)" not in self.run("xprop", "-root", "_NET_SUPPORTING_WM_CHECK"):
            assert time.monotonic() < deadline, "openbox did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        """End the clients, then the server (terminated, so it removes its socket and lock file)."""
        for process in [*self._clients, *([self.server] if self.server else [])]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._clients.clear()


@pytest.fixture(name="xserver")
def xserver_fixture(tmp_path: Path) -> Iterator[XServer]:
    """A running Xvfb; stopped after the test."""
    server = XServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
