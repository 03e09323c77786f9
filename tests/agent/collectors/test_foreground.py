"""The foreground-window probe: local classification, change-only reports, Windows parsing with a fake
``user32``, Xauthority and display discovery, and the Linux back end against a real Xvfb."""

from __future__ import annotations

import getpass
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.collectors import Roots
from agent.collectors._foreground_linux import ForegroundReader
from agent.collectors._foreground_windows import ForegroundReader as WindowsReader
from agent.collectors._foreground_windows import read_foreground as read_windows_foreground
from agent.collectors._probes import ForegroundSample
from agent.collectors._xdisplay_linux import (
    DisplayTarget,
    display_number,
    locate_display,
    parse_xauthority,
    pick_cookie,
    socket_displays,
)
from agent.collectors.foreground import ForegroundTracker, basename, classify
from protos.counterguard.v1 import agent_pb2
from tests.agent.x11 import XServer, xserver_fixture

xserver = xserver_fixture  # a real Xvfb for the tests that ask for it

PATTERNS = [
    agent_pb2.TitlePattern(id="taobao", category="shopping", title_contains=["淘宝", "Taobao"]),
    agent_pb2.TitlePattern(id="wechat", category="chat", executables=["WeChat.exe", "wechat"]),
    agent_pb2.TitlePattern(id="pvz", category="game", title_contains=["植物大战僵尸"], executables=["pvz"]),
]


# ------------------------------------------------------------------ classify


@pytest.mark.parametrize(("title", "executable", "expected"), [
    ("淘宝网 - 淘！我喜欢 - Chromium", "/usr/lib/chromium/chromium", ("shopping", "taobao")),
    ("TAOBAO.COM - Firefox", "firefox-esr", ("shopping", "taobao")),  # case-insensitive
    ("微信", r"C:\Program Files\Tencent\WeChat\WeChat.exe", ("chat", "wechat")),
    ("微信", "/opt/apps/com.qq.weixin/files/WECHAT", ("chat", "wechat")),  # basename, any case
    ("", r"D:\Tencent\wechat.EXE", ("chat", "wechat")),  # ".exe" optional on either side
    ("政务服务平台 - 受理", "/usr/bin/chromium", None),
    ("a wechat article", "/usr/bin/evince", None),  # executables match basenames, not titles
])
def test_classify_matches_titles_by_substring_and_programs_by_basename(title, executable, expected) -> None:
    assert classify(title, executable, PATTERNS) == expected


def test_classify_takes_the_first_matching_pattern_and_ignores_empty_needles() -> None:
    patterns = [agent_pb2.TitlePattern(id="empty", category="x", title_contains=[""], executables=[""]),
                *PATTERNS]
    assert classify("植物大战僵尸 淘宝", "pvz", patterns) == ("shopping", "taobao")
    assert classify("anything", "", patterns) is None
    assert classify("anything", "", []) is None


def test_basename_handles_both_separators() -> None:
    assert basename(r"C:\x\WeChat.exe") == "WeChat.exe" and basename("/usr/bin/pvz") == "pvz" and basename("") == ""


# ------------------------------------------------------------------ tracker


class Script:
    """A reader answering from a list of samples, then repeating the last."""

    def __init__(self, *samples: ForegroundSample | None) -> None:
        self.samples = list(samples)

    def __call__(self) -> ForegroundSample | None:
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


PROGRAMS = {11: ("chromium", "alice"), 12: ("WeChat.exe", "alice"), 13: ("evince", "alice")}


def tracker(*samples: ForegroundSample | None, report_titles: bool = False) -> ForegroundTracker:
    return ForegroundTracker(PATTERNS, report_titles=report_titles, reader=Script(*samples),
                             identify=lambda pid: PROGRAMS.get(pid, ("", "")))


def test_the_tracker_reports_changes_of_category_pattern_or_program_only() -> None:
    t = tracker(ForegroundSample("淘宝网 - 首页", 11), ForegroundSample("淘宝网 - 购物车", 11),
                ForegroundSample("微信", 12), ForegroundSample("report.pdf", 13), ForegroundSample("notes.pdf", 13))
    first = t.poll()
    assert first is not None and (first.category, first.pattern_id, first.executable) == ("shopping", "taobao", "chromium")
    assert (first.pid, first.username, first.title) == (11, "alice", "")  # the title stays on the workstation
    assert t.poll() is None  # another Taobao page: same category, same program
    assert t.poll().category == "chat"
    other = t.poll()
    assert (other.category, other.pattern_id, other.executable) == ("", "", "evince")  # unmatched is reported too
    assert t.poll() is None


def test_titles_are_reported_and_count_as_changes_only_when_the_policy_says_so() -> None:
    t = tracker(ForegroundSample("淘宝网 - 首页", 11), ForegroundSample("淘宝网 - 购物车", 11), report_titles=True)
    assert t.poll().title == "淘宝网 - 首页"
    assert t.poll().title == "淘宝网 - 购物车"


def test_a_new_policy_reclassifies_and_nothing_seen_reports_nothing() -> None:
    t = tracker(None, ForegroundSample("Steam", 13))
    assert t.poll() is None  # no display: nothing, and no state
    assert t.poll().category == ""
    t.set_policy([agent_pb2.TitlePattern(id="steam", category="game", title_contains=["steam"])], False)
    assert (t.poll().category, t.poll()) == ("game", None)
    t.reset()
    assert t.poll().category == "game"


# ------------------------------------------------------------------ Windows


class FakeUser32:
    """``user32`` as far as the probe uses it: windows by handle, each with a title and a process id."""

    def __init__(self, foreground: int, windows: dict[int, tuple[str, int]]) -> None:
        self.foreground, self.windows = foreground, windows

    def GetForegroundWindow(self) -> int:
        return self.foreground

    def GetWindowTextLengthW(self, hwnd: int) -> int:
        return len(self.windows[hwnd][0])

    def GetWindowTextW(self, hwnd: int, buffer: Any, max_count: int) -> int:
        text = self.windows[hwnd][0][:max_count - 1]
        buffer.value = text
        return len(text)

    def GetWindowThreadProcessId(self, hwnd: int, pid: Any) -> int:
        pid.contents.value = self.windows[hwnd][1]
        return 4321  # the thread id, unused


def test_windows_reads_title_and_process_of_the_foreground_window() -> None:
    user32 = FakeUser32(0x3012A, {0x3012A: ("微信", 12), 0x40000: ("", 13)})
    assert read_windows_foreground(user32) == ForegroundSample("微信", 12)
    user32.foreground = 0x40000
    assert read_windows_foreground(user32) == ForegroundSample("", 13)
    user32.foreground = 0
    assert read_windows_foreground(user32) is None  # a service in session 0 sees none


def test_windows_reader_feeds_the_tracker() -> None:
    t = ForegroundTracker(PATTERNS, reader=WindowsReader(FakeUser32(7, {7: ("文件传输助手", 12)})),
                          identify=lambda pid: PROGRAMS[pid])
    assert (t.poll().category, t.poll()) == ("chat", None)
    assert WindowsReader(None)() is None  # no user32 off Windows: nothing, no crash


# ------------------------------------------------------------------ finding the display


def xauth_record(family: int, address: bytes, number: bytes, cookie: bytes,
                 name: bytes = b"MIT-MAGIC-COOKIE-1") -> bytes:
    return struct.pack(">H", family) + b"".join(struct.pack(">H", len(f)) + f for f in (address, number, name, cookie))


def test_xauthority_written_by_xauth_is_parsed(tmp_path: Path) -> None:
    if shutil.which("xauth") is None:
        pytest.fail("xauth missing (run scripts/ensure-test-tools.sh as root)")
    path = tmp_path / "Xauthority"
    subprocess.run(["xauth", "-q", "-f", str(path), "add", ":7", ".", "00112233445566778899aabbccddeeff"], check=True)
    subprocess.run(["xauth", "-q", "-f", str(path), "add", ":8", ".", "ffeeddccbbaa99887766554433221100"], check=True)
    entries = parse_xauthority(path.read_bytes())
    assert [(e.number, e.address) for e in entries] == [(b"7", socket.gethostname().encode()),
                                                        (b"8", socket.gethostname().encode())]
    assert pick_cookie(entries, "8", socket.gethostname()) == bytes.fromhex("ffeeddccbbaa99887766554433221100")
    assert pick_cookie(entries, "9", socket.gethostname()) is None


def test_cookie_choice_prefers_this_host_then_wildcards_and_survives_truncation() -> None:
    data = (xauth_record(256, b"old-name", b"0", b"A" * 16) + xauth_record(0, b"\x7f\x00\x00\x01", b"0", b"B" * 16)
            + xauth_record(256, b"counter-07", b"0", b"C" * 16) + xauth_record(65535, b"", b"", b"D" * 16))
    entries = parse_xauthority(data)
    assert len(entries) == 4
    assert pick_cookie(entries, "0", "counter-07") == b"C" * 16
    assert pick_cookie(entries, "0", "renamed") == b"A" * 16  # a local entry of an old host name still works
    assert pick_cookie(entries, "3", "counter-07") == b"D" * 16  # the wildcard entry serves any display
    assert len(parse_xauthority(data[:-5])) == 3 and parse_xauthority(b"\x01") == []


def test_display_names_and_sockets(tmp_path: Path) -> None:
    assert [display_number(n) for n in (":0", ":1.0", "unix:12", "host", "")] == ["0", "1", "12", "", ""]
    for name in ("X1", "X0", "X10", "Xjunk", "other"):
        (tmp_path / name).touch()
    assert socket_displays(tmp_path) == [":0", ":1", ":10"]


def test_the_active_logind_session_names_display_and_user(tmp_path: Path) -> None:
    sessions = tmp_path / "run/systemd/sessions"
    sessions.mkdir(parents=True)
    (sessions / "c1").write_text("UID=113\nUSER=lightdm\nACTIVE=0\nCLASS=greeter\nDISPLAY=:0\n")
    (sessions / "2").write_text(f"UID=1000\nUSER={getpass.getuser()}\nACTIVE=1\nTYPE=x11\nCLASS=user\nDISPLAY=:5\n")
    (tmp_path / "sockets").mkdir()
    target = locate_display(Roots(run=tmp_path / "run", x11_sockets=tmp_path / "sockets"), {})
    assert target is not None and (target.name, target.username, target.session) == (":5", getpass.getuser(), "2")
    assert locate_display(Roots(run=tmp_path / "none", x11_sockets=tmp_path / "sockets"), {}) is None


# ------------------------------------------------------------------ a real X server


def probe(server: XServer, patterns=PATTERNS, **kwargs: Any) -> ForegroundTracker:
    return ForegroundTracker(patterns, reader=ForegroundReader(Roots(), server.probe_environ), **kwargs)


def test_x11_the_focused_window_is_classified_without_a_window_manager(xserver: XServer) -> None:
    window, process = xserver.window("淘宝网 - 购物")
    xserver.run("xdotool", "windowfocus", "--sync", str(window))
    tracker_ = probe(xserver)
    seen = tracker_.poll()
    assert seen is not None and (seen.category, seen.pattern_id) == ("shopping", "taobao")
    assert (seen.executable, seen.pid, seen.username, seen.title) == ("xmessage", process.pid, getpass.getuser(), "")
    assert tracker_.poll() is None
    other, _ = xserver.window("受理登记", pid_property=False)  # a client that does not set _NET_WM_PID
    xserver.run("xdotool", "windowfocus", "--sync", str(other))
    seen = tracker_.poll()
    assert (seen.category, seen.executable, seen.pid) == ("", "", 0)


def test_x11_focus_on_an_untitled_child_window_climbs_to_its_titled_top_level(xserver: XServer) -> None:
    window, process = xserver.window("植物大战僵尸")
    children = re.findall(r"^\s+(0x[0-9a-f]+)", xserver.run("xwininfo", "-children", "-id", str(window)), re.MULTILINE)
    assert children, "xmessage has widget windows inside its top-level window"
    xserver.run("xdotool", "windowfocus", "--sync", children[0])
    assert int(xserver.run("xdotool", "getwindowfocus")) == int(children[0], 16)  # the untitled child has it
    sample = ForegroundReader(Roots(), xserver.probe_environ)()
    assert sample == ForegroundSample("植物大战僵尸", process.pid, xserver.display)


def test_x11_the_window_manager_s_active_window_is_followed(xserver: XServer) -> None:
    xserver.window_manager()
    shop, _ = xserver.window("淘宝网 - 购物")
    game, _ = xserver.window("植物大战僵尸 年度版")
    tracker_ = probe(xserver, report_titles=True)
    for window, category, title in ((shop, "shopping", "淘宝网 - 购物"), (game, "game", "植物大战僵尸 年度版")):
        xserver.run("xdotool", "windowactivate", "--sync", str(window))
        assert f"{window:#x}" in xserver.run("xprop", "-root", "_NET_ACTIVE_WINDOW")
        seen = tracker_.poll()
        assert seen is not None and (seen.category, seen.title, seen.executable) == (category, title, "xmessage")


def test_x11_display_and_cookie_are_found_as_a_system_service_finds_them(xserver: XServer, tmp_path: Path) -> None:
    """No DISPLAY, no XAUTHORITY: the logind session names the display, the X server's -auth has the cookie."""
    window, process = xserver.window("淘宝网 - 购物")
    xserver.run("xdotool", "windowfocus", "--sync", str(window))
    sessions = tmp_path / "run/systemd/sessions"
    sessions.mkdir(parents=True)
    (sessions / "3").write_text(f"USER={getpass.getuser()}\nACTIVE=1\nTYPE=x11\nDISPLAY={xserver.display}\n")
    roots = Roots(run=tmp_path / "run", x11_sockets=tmp_path / "no-sockets")
    target = locate_display(roots, {})
    assert target == DisplayTarget(xserver.display, target.cookie, getpass.getuser(), "3") and target.cookie
    assert ForegroundReader(roots, {})() == ForegroundSample("淘宝网 - 购物", process.pid, xserver.display)


def test_x11_a_vanished_server_gives_nothing_and_one_log_line(xserver: XServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    window, _ = xserver.window("淘宝网 - 购物")
    xserver.run("xdotool", "windowfocus", "--sync", str(window))
    reader = ForegroundReader(Roots(x11_sockets=Path("/nonexistent")), {"DISPLAY": xserver.display,
                                                                        "XAUTHORITY": os.devnull})
    assert reader() is not None
    xserver.stop()
    with caplog.at_level(logging.INFO, logger="agent.collectors"):
        assert [reader(), reader(), reader()] == [None, None, None]
    assert len([r for r in caplog.records if "cannot open X display" in r.getMessage()]) == 1


def test_on_win32_the_desktop_probes_pick_their_windows_back_ends() -> None:
    """Importing them needs no Windows module; what has no Windows back end yet reports nothing."""
    code = (  # third-party modules pick their own back ends at import: load them as on Linux first
        "import sys, psutil, google.protobuf, watchdog.observers, jeepney\n"
        "sys.platform = 'win32'\n"
        "from agent.collectors import activity, antivirus, foreground, removable\n"
        "print(foreground._backend.__name__, activity._backend.__name__)\n"
        "print(removable.RemovableTracker().poll(), antivirus.installed_packages(None))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[3])
    assert result.stdout.splitlines() == ["agent.collectors._foreground_windows agent.collectors._idle_windows",
                                          "[] {}"]
