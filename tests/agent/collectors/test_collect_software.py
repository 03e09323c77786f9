"""The Linux software collector and SoftwareTracker against fake dpkg, desktop, Flatpak and snap trees."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import pytest

from agent.collectors._desktop_linux import executable_of
from agent.collectors.software import SoftwareTracker, collect_software
from protos.counterguard.v1 import facts_pb2

if TYPE_CHECKING:
    from conftest import FakeSystem

DPKG = facts_pb2.SOFTWARE_SOURCE_DPKG
DESKTOP = facts_pb2.SOFTWARE_SOURCE_DESKTOP_ENTRY
FLATPAK = facts_pb2.SOFTWARE_SOURCE_FLATPAK
SNAP = facts_pb2.SOFTWARE_SOURCE_SNAP
T0 = dt.datetime(2025, 6, 1, 8, 30, tzinfo=dt.UTC).timestamp()


def stanza(package: str, status: str = "install ok installed", *, version: str = "1.0-1", section: str = "utils",
           arch: str = "amd64", maintainer: str = "Debian QA Group <packages@qa.debian.org>") -> str:
    return (
        f"Package: {package}\nStatus: {status}\nPriority: optional\nSection: {section}\nInstalled-Size: 120\n"
        f"Maintainer: {maintainer}\nArchitecture: {arch}\nVersion: {version}\nDepends: libc6 (>= 2.34)\n"
        f"Description: the {package} package\n a long description\n .\n Section: not-a-field\n"
    )


def by_key(items: list[facts_pb2.SoftwareItem]) -> dict[tuple[int, str], facts_pb2.SoftwareItem]:
    return {(item.source, item.name): item for item in items}


# ------------------------------------------------------------------------------------ dpkg


def test_dpkg_installed_packages_with_fields_and_install_date(fake: FakeSystem) -> None:
    fake.dpkg_status(
        stanza("dpkg", version="1.21.22", section="admin", maintainer="Dpkg Developers <debian-dpkg@lists.debian.org>"),
        stanza("supertuxkart", version="1.4+dfsg-3", section="games", arch="amd64",
               maintainer="Debian Games Team <pkg-games-devel@lists.alioth.debian.org>"),
    )
    fake.dpkg_list("supertuxkart", mtime=T0)
    items = by_key(collect_software(fake.roots))
    game = items[(DPKG, "supertuxkart")]
    assert (game.version, game.section, game.architecture) == ("1.4+dfsg-3", "games", "amd64")
    assert game.publisher == "Debian Games Team"
    assert game.install_date.ToDatetime(tzinfo=dt.UTC).timestamp() == T0
    assert items[(DPKG, "dpkg")].section == "admin"
    assert not items[(DPKG, "dpkg")].HasField("install_date")  # no .list file in this tree


@pytest.mark.parametrize(
    ("status", "listed"),
    [
        ("install ok installed", True),
        ("hold ok installed", True),  # held back from upgrades: still installed
        ("install ok triggers-pending", True),  # in the middle of an apt run
        ("install ok unpacked", True),
        ("deinstall ok config-files", False),  # removed, configuration left behind
        ("purge ok not-installed", False),
        ("install reinstreq half-installed", False),
    ],
)
def test_dpkg_status_decides_what_is_installed(fake: FakeSystem, status: str, listed: bool) -> None:
    fake.dpkg_status(stanza("gnome-mines", status, section="games"))
    assert [item.name for item in collect_software(fake.roots)] == (["gnome-mines"] if listed else [])


def test_multiarch_package_of_foreign_architecture_is_qualified(fake: FakeSystem) -> None:
    fake.dpkg_status(
        stanza("dpkg", arch="amd64"),
        stanza("libc6", arch="amd64", version="2.36-9"),
        stanza("libc6", arch="i386", version="2.36-9"),
        stanza("tzdata", arch="all"),
    )
    fake.write("var/lib/dpkg/info/libc6:i386.list", "/.\n", mtime=T0)
    items = by_key(collect_software(fake.roots))
    assert set(items) == {(DPKG, "dpkg"), (DPKG, "libc6"), (DPKG, "libc6:i386"), (DPKG, "tzdata")}
    assert items[(DPKG, "libc6:i386")].install_date.seconds == int(T0)  # from <pkg>:<arch>.list


def test_missing_dpkg_database_gives_no_packages(fake: FakeSystem) -> None:
    assert collect_software(fake.roots) == []


def test_unreadable_dpkg_status_gives_no_packages(fake: FakeSystem) -> None:
    fake.unreadable("var/lib/dpkg/status")
    assert collect_software(fake.roots) == []


# --------------------------------------------------------------------------------- desktop


GAME_DESKTOP = """\
[Desktop Entry]
Version=1.0
Type=Application
Name=SuperTuxKart
Name[zh_CN]=超级企鹅卡丁车
Comment=A kart racing game
Exec=env SDL_VIDEODRIVER=x11 /usr/games/supertuxkart %U
Icon=supertuxkart
Categories=Game;ArcadeGame;

[Desktop Action Window]
Name=Windowed
Exec=/usr/games/other --windowed
Categories=Ignored;
"""


def test_desktop_entry_with_categories_and_executable(fake: FakeSystem) -> None:
    path = fake.desktop("supertuxkart.desktop", GAME_DESKTOP, mtime=T0)  # the date it had in its package
    arrived = dt.datetime.now(dt.UTC)
    (item,) = collect_software(fake.roots)
    assert (item.source, item.name) == (DESKTOP, "supertuxkart.desktop")
    assert item.display_name == "SuperTuxKart"
    assert list(item.categories) == ["Game", "ArcadeGame"]
    assert item.executable == "supertuxkart"
    assert item.install_location == str(path)
    assert abs(item.install_date.ToDatetime(tzinfo=dt.UTC) - arrived) < dt.timedelta(seconds=30)  # not T0


def test_desktop_file_id_uses_the_relative_path(fake: FakeSystem) -> None:
    fake.desktop("kde4/kmahjongg.desktop", "[Desktop Entry]\nType=Application\nName=KMahjongg\nExec=kmahjongg\n")
    (item,) = collect_software(fake.roots)
    assert item.name == "kde4-kmahjongg.desktop"


def test_chinese_name_is_used_when_there_is_no_plain_name(fake: FakeSystem) -> None:
    fake.desktop("wps.desktop", "[Desktop Entry]\nType=Application\nName[zh_CN]=WPS 文字\nExec=/usr/bin/wps %F\n")
    (item,) = collect_software(fake.roots)
    assert item.display_name == "WPS 文字" and item.executable == "wps"


@pytest.mark.parametrize(
    "body",
    [
        "[Desktop Entry]\nType=Application\nName=Gone\nExec=gone\nHidden=true\n",
        "[Desktop Entry]\nType=Link\nName=Website\nURL=https://example.org\n",
        "[Desktop Entry]\nName=No type\nExec=notype\n",
        "[Other Group]\nType=Application\nName=Elsewhere\nExec=elsewhere\n",
        "",
    ],
    ids=["hidden", "link", "no-type", "other-group", "empty"],
)
def test_desktop_files_that_are_not_visible_applications_are_skipped(fake: FakeSystem, body: str) -> None:
    fake.desktop("thing.desktop", body)
    assert collect_software(fake.roots) == []


def test_first_application_folder_wins_for_the_same_id(fake: FakeSystem) -> None:
    fake.desktop("firefox.desktop", "[Desktop Entry]\nType=Application\nName=Local\nExec=/opt/ff/firefox\n", folder=0)
    fake.desktop("firefox.desktop", "[Desktop Entry]\nType=Application\nName=System\nExec=firefox\n", folder=1)
    fake.desktop("hidden.desktop", "[Desktop Entry]\nType=Application\nName=X\nExec=x\nHidden=true\n", folder=0)
    fake.desktop("hidden.desktop", "[Desktop Entry]\nType=Application\nName=Y\nExec=y\n", folder=1)
    (item,) = collect_software(fake.roots)
    assert item.display_name == "Local"  # and the hidden override deletes hidden.desktop altogether


@pytest.mark.parametrize(
    ("exec_line", "expected"),
    [
        ("/usr/bin/gnome-mines", "gnome-mines"),
        ("sol %U", "sol"),
        ('"/opt/apps/com.qq.weixin/files/weixin" %u', "weixin"),
        ("env LANG=zh_CN.UTF-8 QT_SCALE=1 /opt/wps/wps %F", "wps"),
        ("LANG=C /usr/bin/xterm", "xterm"),
        ("env -i /usr/bin/env-less", "env-less"),
        ("/usr/bin/flatpak run --branch=stable --arch=x86_64 --command=steam com.valvesoftware.Steam @@u %U @@",
         "steam"),
        ("flatpak run org.gnome.Chess", "org.gnome.Chess"),
        ('bad "quote', "bad"),
        ("%U", ""),
        ("", ""),
    ],
)
def test_executable_of_exec_lines(exec_line: str, expected: str) -> None:
    assert executable_of(exec_line) == expected


# ------------------------------------------------------------------------------ flatpak, snap


METAINFO = """<?xml version="1.0" encoding="UTF-8"?>
<component type="desktop-application">
  <id>org.gnome.Chess</id>
  <name>Chess</name>
  <name xml:lang="zh_CN">国际象棋</name>
  <releases>
    <release version="44.1" date="2023-06-01"/>
    <release version="44.0" date="2023-03-17"/>
  </releases>
</component>
"""


def test_flatpak_app_with_version_from_metainfo(fake: FakeSystem) -> None:
    app = fake.flatpak_app("org.gnome.Chess", metainfo=METAINFO)
    fake.flatpak_app("org.example.Plain", branch="beta")
    fake.write("var/lib/flatpak/runtime/org.gnome.Platform/x86_64/44/active/files/x", "")
    items = by_key(collect_software(fake.roots))
    chess = items[(FLATPAK, "org.gnome.Chess")]
    assert (chess.version, chess.display_name, chess.architecture) == ("44.1", "Chess", "x86_64")
    assert chess.install_location == str(app) and chess.HasField("install_date")
    assert items[(FLATPAK, "org.example.Plain")].version == "beta"  # no metainfo: the branch
    assert len(items) == 2  # the runtime is not an application


def test_flatpak_app_without_current_link_is_skipped(fake: FakeSystem) -> None:
    fake.write("var/lib/flatpak/app/org.broken.App/x86_64/stable/leftover", "")
    assert collect_software(fake.roots) == []


def test_snaps_are_read_without_yaml_and_plumbing_is_skipped(fake: FakeSystem) -> None:
    fake.snap("firefox", "name: firefox\nversion: '128.0.3-1'\ntitle: Firefox\nsummary: Mozilla Firefox\n"
              "apps:\n  firefox:\n    command: firefox.launcher\n    version: nested-is-ignored\n")
    fake.snap("core22", "name: core22\nversion: '20240111'\ntype: base\n")
    fake.snap("snapd", "name: snapd\nversion: '2.61.3'\ntype: snapd\n")
    fake.snap("bare", "name: bare\nversion: '1.0'\n")  # known by name alone
    fake.snap("core18", "name: core18\nversion: '20231027'\n")  # known by name alone
    fake.snap("pc-kernel", "name: pc-kernel\nversion: 6.8.0-45.45\ntype: kernel\n")  # known by type alone
    fake.snap("gnome-42-2204", 'name: gnome-42-2204\nversion: "0+git.ff35a85"\n')
    fake.write("snap/bin/firefox", "")
    items = by_key(collect_software(fake.roots))
    assert set(items) == {(SNAP, "firefox"), (SNAP, "gnome-42-2204")}
    firefox = items[(SNAP, "firefox")]
    assert (firefox.version, firefox.display_name) == ("128.0.3-1", "Firefox")
    assert items[(SNAP, "gnome-42-2204")].version == "0+git.ff35a85"


def test_everything_is_sorted_by_source_then_name(fake: FakeSystem) -> None:
    fake.dpkg_status(stanza("zsh"), stanza("aisleriot", section="games"))
    fake.desktop("sol.desktop", "[Desktop Entry]\nType=Application\nName=Solitaire\nExec=sol\n")
    fake.flatpak_app("com.example.B")
    fake.snap("alpha", "name: alpha\nversion: 1\n")
    keys = [(item.source, item.name) for item in collect_software(fake.roots)]
    assert keys == [(DPKG, "aisleriot"), (DPKG, "zsh"), (DESKTOP, "sol.desktop"), (FLATPAK, "com.example.B"),
                    (SNAP, "alpha")]


# --------------------------------------------------------------------------------- tracker


def test_tracker_reports_added_removed_and_changed(fake: FakeSystem) -> None:
    fake.dpkg_status(stanza("dpkg"), stanza("vim", version="2:9.0.1378-2"))
    tracker = SoftwareTracker(fake.roots)
    snapshot = tracker.snapshot()
    assert [item.name for item in snapshot.items] == ["dpkg", "vim"]
    assert tracker.poll() is None  # nothing changed

    game = fake.desktop("supertuxkart.desktop", GAME_DESKTOP)
    delta = tracker.poll()
    assert delta is not None
    assert [item.name for item in delta.added] == ["supertuxkart.desktop"]
    assert list(delta.added[0].categories) == ["Game", "ArcadeGame"]
    assert not delta.removed and not delta.changed
    assert tracker.poll() is None

    game.unlink()
    delta = tracker.poll()
    assert delta is not None
    assert [item.name for item in delta.removed] == ["supertuxkart.desktop"] and not delta.added

    fake.dpkg_status(stanza("dpkg"), stanza("vim", version="2:9.0.1378-2+deb12u1"))
    delta = tracker.poll()
    assert delta is not None
    assert [(item.name, item.version) for item in delta.changed] == [("vim", "2:9.0.1378-2+deb12u1")]
    assert not delta.added and not delta.removed
    assert tracker.poll() is None


def test_tracker_reports_a_change_in_fields_other_than_the_version(fake: FakeSystem) -> None:
    entry = "[Desktop Entry]\nType=Application\nName=Mahjong\nExec=mahjong\nCategories={}\n"
    fake.desktop("mahjong.desktop", entry.format("Utility;"), mtime=T0)
    tracker = SoftwareTracker(fake.roots)
    tracker.snapshot()
    fake.desktop("mahjong.desktop", entry.format("Game;BoardGame;"), mtime=T0)
    delta = tracker.poll()
    assert delta is not None and [list(item.categories) for item in delta.changed] == [["Game", "BoardGame"]]


def test_tracker_poll_before_snapshot_reports_everything_as_added(fake: FakeSystem) -> None:
    fake.dpkg_status(stanza("dpkg"))
    delta = SoftwareTracker(fake.roots).poll()
    assert delta is not None and [item.name for item in delta.added] == ["dpkg"]


def test_tracker_sees_a_package_removed_leaving_config_files(fake: FakeSystem) -> None:
    fake.dpkg_status(stanza("dpkg"), stanza("gnome-mines", section="games"))
    tracker = SoftwareTracker(fake.roots)
    tracker.snapshot()
    fake.dpkg_status(stanza("dpkg"), stanza("gnome-mines", "deinstall ok config-files", section="games"))
    delta = tracker.poll()
    assert delta is not None and [item.name for item in delta.removed] == ["gnome-mines"]
