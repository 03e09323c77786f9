"""The install watcher: its locations, the debounce, and a real watchdog observer on fake install trees."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

from agent.collectors._install_locations import Location, linux_locations, user_homes, windows_locations
from agent.collectors._install_watch import Debouncer, watch_rules
from agent.collectors.software import InstallWatcher, SoftwareTracker
from protos.counterguard.v1 import facts_pb2

if TYPE_CHECKING:
    from conftest import FakeSystem

QUIET, MAX_DELAY = 0.4, 3.0
GAME = "[Desktop Entry]\nType=Application\nName=Mines\nExec=mines\nCategories=Game;\n"


def passwd(fake: FakeSystem, *users: tuple[str, int, Path]) -> None:
    lines = ["root:x:0:0:root:/root:/bin/bash", "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin"]
    lines += [f"{name}:x:{uid}:{uid}:{name}:{home}:/bin/bash" for name, uid, home in users]
    lines.append(f"nobody:x:65534:65534:nobody:{fake.root}:/usr/sbin/nologin")
    fake.write("etc/passwd", "\n".join(lines) + "\n")


class Rescans:
    """Counts the watcher's rescan calls and lets a test wait for the next one."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._event = threading.Event()

    def __call__(self) -> None:
        self.times.append(time.monotonic())
        self._event.set()

    def wait(self, timeout: float = MAX_DELAY + 3) -> bool:
        woke = self._event.wait(timeout)
        self._event.clear()
        return woke


def start_watcher(fake: FakeSystem, rescans: Rescans) -> InstallWatcher:
    watcher = InstallWatcher(rescans, fake.roots, quiet=QUIET, max_delay=MAX_DELAY)
    watcher.start()
    return watcher


# ------------------------------------------------------------------------------ debounce


def test_a_burst_ends_after_a_quiet_spell_or_at_the_latest_max_delay_after_it_began() -> None:
    burst = Debouncer(quiet=2, max_delay=8)
    assert burst.due() is None and not burst.take(100)
    for moment in (100, 100.5, 101, 101.2):
        burst.note(moment)
    assert burst.due() == 103.2
    assert not burst.take(103.1) and burst.take(103.2)
    assert burst.due() is None  # taken: the next change starts a new burst

    for moment in range(200, 212):  # a change every second for 12 s never goes quiet
        burst.note(moment)
    assert burst.due() == 208 and burst.take(211)


# ------------------------------------------------------------------------------ locations


def test_linux_locations_cover_dpkg_applications_users_opt_and_bundles(fake: FakeSystem) -> None:
    alice, bob = fake.root / "home/alice", fake.root / "home/bob"
    alice.mkdir(parents=True)
    passwd(fake, ("alice", 1000, alice), ("bob", 1001, bob))  # bob's home does not exist
    fake.flatpak_app("org.example.Game")
    fake.snap("chromium", "name: chromium\nversion: '120'\n")
    roots = dataclasses.replace(fake.roots, opt_dirs=(fake.root / "opt",))

    locations = linux_locations(roots)

    dpkg = fake.root / "var/lib/dpkg"
    assert locations[0] == Location(dpkg, names=frozenset({"status"}))
    assert user_homes(roots) == [alice]  # regular users with an existing home; not root, www-data, nobody
    recursive = [loc.path for loc in locations if loc.recursive]
    assert recursive == [*fake.roots.application_dirs, alice / ".local/share/applications"]
    plain = {loc.path: loc.names for loc in locations if not loc.recursive and loc.rescan}
    assert plain == {
        dpkg: {"status"}, fake.root / "opt": set(), fake.root / "var/lib/flatpak/app": set(), fake.root / "snap": set(),
        fake.root / "var/lib/flatpak/app/org.example.Game": {"current"}, fake.root / "snap/chromium": {"current"},
    }
    assert Location(fake.root / "etc", names=frozenset({"passwd"}), rescan=False) in locations


def test_windows_locations_come_from_the_environment_whatever_its_case() -> None:
    environ = {"PROGRAMFILES": r"C:\Program Files", "ProgramFiles(x86)": r"C:\Program Files (x86)",
               "ProgramW6432": r"C:\Program Files", "ProgramData": r"C:\ProgramData", "TEMP": r"C:\Temp"}
    assert windows_locations(environ) == [
        Location(PureWindowsPath(r"C:\Program Files")),
        Location(PureWindowsPath(r"C:\Program Files (x86)")),
        Location(PureWindowsPath(r"C:\ProgramData\Microsoft\Windows\Start Menu"), recursive=True),
    ]
    assert windows_locations({"ProgramFiles": r"D:\Apps", "ProgramData": ""}) == [Location(PureWindowsPath(r"D:\Apps"))]


def test_a_missing_location_is_watched_through_its_nearest_existing_ancestor(tmp_path: Path) -> None:
    (tmp_path / "opt").mkdir()
    rules = watch_rules([Location(tmp_path / "opt"), Location(tmp_path / "home/bob/.local/share/applications", True),
                         Location(tmp_path / "home/carol/.local", True)])
    assert rules == [Location(tmp_path / "opt"),
                     Location(tmp_path, names=frozenset({"home"}), rescan=False)]  # one rule for both users


def test_the_software_collector_reads_every_users_own_applications(fake: FakeSystem) -> None:
    alice = fake.root / "home/alice"
    passwd(fake, ("alice", 1000, alice))
    fake.write(alice / ".local/share/applications/wine-Programs-Steam.desktop", GAME.replace("Mines", "Steam"))
    fake.desktop("mines.desktop", GAME)
    fake.write(alice / ".local/share/applications/mines.desktop", GAME.replace("Mines", "My Mines"))
    names = {item.name: item for item in SoftwareTracker(fake.roots).snapshot().items}
    assert names["wine-Programs-Steam.desktop"].display_name == "Steam"
    assert names["mines.desktop"].display_name == "Mines"  # the system's entry comes first


# ------------------------------------------------------------------------------ a real observer


def test_a_desktop_file_and_a_dpkg_status_rewrite_each_give_one_rescan(fake: FakeSystem) -> None:
    fake.dpkg_status("Package: dpkg\nStatus: install ok installed\nVersion: 1.21\n")
    for folder in fake.roots.application_dirs:
        folder.mkdir(parents=True, exist_ok=True)
    rescans = Rescans()
    watcher = start_watcher(fake, rescans)
    try:
        assert {fake.root / "var/lib/dpkg", *fake.roots.application_dirs} <= set(watcher.watched)
        started = time.monotonic()
        fake.desktop("mines.desktop", GAME)
        assert rescans.wait()
        assert QUIET <= rescans.times[-1] - started < QUIET + 1.5

        (fake.root / "var/lib/dpkg/lock-frontend").touch()  # dpkg's locks and info/ change on every run ...
        fake.write("var/lib/dpkg/info/mines.list", "/usr/games/mines\n")
        assert not rescans.wait(QUIET + 1)  # ... and are not an install

        new = fake.root / "var/lib/dpkg/status-new"  # how dpkg replaces its database
        new.write_text("Package: mines\nStatus: install ok installed\nVersion: 1\n", encoding="utf-8")
        os.replace(new, fake.root / "var/lib/dpkg/status")
        assert rescans.wait()
    finally:
        watcher.stop()
    assert len(rescans.times) == 2 and watcher.watched == []


def test_three_hundred_files_in_a_burst_make_one_rescan(fake: FakeSystem) -> None:
    apps = fake.roots.application_dirs[1]
    apps.mkdir(parents=True)
    rescans = Rescans()
    watcher = start_watcher(fake, rescans)
    try:
        for index in range(300):
            folder = apps / f"suite{index % 3}"  # subfolders too: the application folders are watched recursively
            folder.mkdir(exist_ok=True)
            (folder / f"tool{index}.desktop").write_text(GAME, encoding="utf-8")
        assert rescans.wait()
        assert not rescans.wait(QUIET + 1.5)
    finally:
        watcher.stop()
    assert len(rescans.times) == 1


def test_a_change_that_never_goes_quiet_is_rescanned_at_the_latest_max_delay_after_it_began(fake: FakeSystem) -> None:
    apps = fake.roots.application_dirs[1]
    apps.mkdir(parents=True)
    rescans = Rescans()
    watcher = InstallWatcher(rescans, fake.roots, quiet=1.0, max_delay=2.0)
    watcher.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 3.5:  # a file every 0.2 s: never 1 s quiet
            (apps / f"t{time.monotonic_ns()}.desktop").write_text(GAME, encoding="utf-8")
            time.sleep(0.2)
        assert rescans.wait()
    finally:
        watcher.stop()
    first = rescans.times[0] - started
    assert 2.0 <= first < 3.0  # not held back by a burst that never ends


def test_folders_that_appear_later_are_watched_and_rescanned(fake: FakeSystem) -> None:
    home = fake.root / "home/alice"
    home.mkdir(parents=True)
    passwd(fake, ("alice", 1000, home))
    opt = fake.root / "opt"
    rescans = Rescans()
    watcher = InstallWatcher(rescans, dataclasses.replace(fake.roots, opt_dirs=(opt,)), quiet=QUIET,
                             max_delay=MAX_DELAY)
    watcher.start()
    try:
        assert opt not in watcher.watched and home in watcher.watched  # alice has no applications folder yet
        opt.mkdir()  # /opt is made ...
        assert rescans.wait()
        assert opt in watcher.watched
        (opt / "newapp").mkdir()  # ... and a program unpacked in it
        assert rescans.wait()

        apps = home / ".local/share/applications"
        apps.mkdir(parents=True)  # the desktop makes alice's folder, step by step
        (apps / "wine-Programs-QQ.desktop").write_text(GAME, encoding="utf-8")
        assert rescans.wait()
        assert apps in watcher.watched and home not in watcher.watched

        bob = fake.root / "home/bob"
        (bob / ".local/share/applications").mkdir(parents=True)
        passwd(fake, ("alice", 1000, home), ("bob", 1001, bob))  # a new user
        assert rescans.wait()
        assert bob / ".local/share/applications" in watcher.watched
    finally:
        watcher.stop()


def test_the_rescan_reports_the_install_as_a_delta(fake: FakeSystem) -> None:
    fake.dpkg_status("Package: dpkg\nStatus: install ok installed\nVersion: 1.21\n")
    tracker = SoftwareTracker(fake.roots)
    tracker.snapshot()
    deltas: list[facts_pb2.SoftwareDelta | None] = []
    rescans = Rescans()
    watcher = start_watcher(fake, lambda: (deltas.append(tracker.poll()), rescans()))  # type: ignore[func-returns-value]
    try:
        fake.dpkg_status("Package: dpkg\nStatus: install ok installed\nVersion: 1.21\n",
                         "Package: supertuxkart\nStatus: install ok installed\nVersion: 1.4\nSection: games\n")
        assert rescans.wait()
    finally:
        watcher.stop()
    [delta] = deltas
    assert delta is not None and [(i.name, i.section) for i in delta.added] == [("supertuxkart", "games")]
    assert not delta.removed and not delta.changed
