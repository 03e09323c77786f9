"""A fake Linux file system for the collector tests: sysfs, procfs, /etc, dpkg, desktop files, bundles, utmp.

The ``fake`` fixture is a :class:`FakeSystem` rooted in ``tmp_path``; its ``roots`` point every collector
at it. Helpers write files the way the kernel and the packaging tools lay them out, so the tests read
like a description of a machine.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import pytest

from agent.collectors import Roots

# glibc struct utmp offsets (x86_64/aarch64), written independently of the parser under test.
UTMP_SIZE, UT_PID, UT_LINE, UT_ID, UT_USER, UT_HOST, UT_TV_SEC = 384, 4, 8, 40, 44, 76, 340


class FakeSystem:
    """Builds a fake machine under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.roots = Roots(
            sysfs=root / "sys",
            procfs=root / "proc",
            etc=root / "etc",
            dpkg_status=root / "var/lib/dpkg/status",
            dpkg_info=root / "var/lib/dpkg/info",
            application_dirs=(root / "usr/local/share/applications", root / "usr/share/applications"),
            flatpak_dirs=(root / "var/lib/flatpak",),
            snap_dir=root / "snap",
            utmp=root / "run/utmp",
            var_log=root / "var/log",
            run=root / "run",
        )

    # ------------------------------------------------------------------ basics

    def write(self, relative: str | Path, content: str | bytes, mtime: float | None = None) -> Path:
        """Write a file below the root (parents created); ``mtime`` sets its modification time."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def unreadable(self, relative: str | Path) -> Path:
        """A directory where a file is expected: reading it fails like a root-only file does for others."""
        path = self.root / relative
        path.mkdir(parents=True, exist_ok=True)
        return path

    def symlink(self, relative: str | Path, target: str | Path) -> Path:
        """A symbolic link below the root pointing at ``target`` (relative targets are kept relative)."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
        return path

    # ---------------------------------------------------------------- hardware

    def dmi(self, **files: str) -> None:
        """Files under /sys/class/dmi/id, e.g. ``product_serial="PC0ABC12"``."""
        for name, value in files.items():
            self.write(f"sys/class/dmi/id/{name}", value + "\n")

    def cpuinfo(self, *blocks: dict[str, str | int]) -> None:
        """/proc/cpuinfo with one block per processor."""
        text = "\n".join("".join(f"{key}\t: {value}\n" for key, value in block.items()) for block in blocks)
        self.write("proc/cpuinfo", text + "\n")

    def meminfo(self, total_kb: int, swap_kb: int) -> None:
        """/proc/meminfo with the usual neighbours around the two lines that matter."""
        self.write(
            "proc/meminfo",
            f"MemTotal:       {total_kb} kB\nMemFree:         1234 kB\nMemAvailable:    5678 kB\n"
            f"SwapCached:          0 kB\nSwapTotal:      {swap_kb} kB\nSwapFree:       {swap_kb} kB\n",
        )

    def block(self, name: str, sectors: int, *, rotational: bool = False, removable: bool = False,
              device: dict[str, str | bytes] | None = None, files: dict[str, str] | None = None,
              device_dir: str | None = None) -> Path:
        """/sys/block/<name> with ``size``, ``removable``, ``queue/rotational`` and ``device/*`` files.

        ``device_dir`` (relative to the root) makes ``device`` a symlink into that directory, as sysfs does.
        """
        base = self.root / "sys/block" / name
        self.write(base / "size", f"{sectors}\n")
        self.write(base / "removable", "1\n" if removable else "0\n")
        self.write(base / "queue/rotational", "1\n" if rotational else "0\n")
        for file, value in (files or {}).items():
            self.write(base / file, value)
        if device_dir is not None:
            (self.root / device_dir).mkdir(parents=True, exist_ok=True)
            (base / "device").symlink_to(self.root / device_dir)
        for device_file, content in (device or {}).items():
            self.write(base / "device" / device_file, content)
        return base

    def net(self, name: str, *, mac: str, operstate: str = "up", speed: str = "1000",
            physical: bool = True) -> Path:
        """/sys/class/net/<name>; a physical interface has a ``device`` link, a virtual one has none."""
        base = self.root / "sys/class/net" / name
        self.write(base / "address", mac + "\n")
        self.write(base / "operstate", operstate + "\n")
        if speed:
            self.write(base / "speed", speed + "\n")
        if physical:
            target = self.root / "sys/devices/pci0000:00" / name
            target.mkdir(parents=True, exist_ok=True)
            (base / "device").symlink_to(target)
        return base

    def route(self, *rows: tuple[str, str, str, str, int, str]) -> None:
        """/proc/net/route rows: (iface, destination, gateway, flags, metric, mask), hex as the kernel writes."""
        header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        body = "".join(f"{i}\t{d}\t{g}\t{f}\t0\t0\t{m}\t{mask}\t0\t0\t0\n" for i, d, g, f, m, mask in rows)
        self.write("proc/net/route", header + body)

    def usb(self, bus_id: str, *, vendor_id: str, product_id: str, device_class: str = "00",
            manufacturer: str | None = None, product: str | None = None, serial: str | None = None,
            interfaces: Iterable[str] = ()) -> Path:
        """A USB device as sysfs lays it out: the device directory with its interface subdirectories
        (``<bus_id>:1.<n>``), and links to both in /sys/bus/usb/devices."""
        device = self.root / "sys/devices/pci0000:00/0000:00:14.0/usb1" / bus_id
        self.write(device / "idVendor", vendor_id + "\n")
        self.write(device / "idProduct", product_id + "\n")
        self.write(device / "bDeviceClass", device_class + "\n")
        for file, value in (("manufacturer", manufacturer), ("product", product), ("serial", serial)):
            if value is not None:
                self.write(device / file, value + "\n")
        self.symlink(f"sys/bus/usb/devices/{bus_id}", device)
        for number, interface_class in enumerate(interfaces):
            interface = device / f"{bus_id}:1.{number}"
            self.write(interface / "bInterfaceClass", interface_class + "\n")
            self.symlink(f"sys/bus/usb/devices/{interface.name}", interface)
        return device

    # ---------------------------------------------------------------- software

    def dpkg_status(self, *stanzas: str) -> None:
        """/var/lib/dpkg/status made of the given stanzas."""
        self.write("var/lib/dpkg/status", "\n".join(stanza.strip("\n") + "\n" for stanza in stanzas))

    def dpkg_list(self, name: str, mtime: float) -> Path:
        """/var/lib/dpkg/info/<name>.list with a set modification time (the package's install date)."""
        return self.write(f"var/lib/dpkg/info/{name}.list", "/.\n/usr\n", mtime=mtime)

    def desktop(self, file: str, body: str, *, folder: int = 1, mtime: float | None = None) -> Path:
        """A .desktop file in ``roots.application_dirs[folder]`` (default: usr/share/applications)."""
        return self.write(self.roots.application_dirs[folder] / file, body, mtime=mtime)

    def flatpak_app(self, app_id: str, *, arch: str = "x86_64", branch: str = "stable",
                    metainfo: str | None = None) -> Path:
        """A deployed Flatpak app: ``current`` → ``<arch>/<branch>``, whose ``active`` → a commit directory."""
        app = self.root / "var/lib/flatpak/app" / app_id
        commit = app / arch / branch / "0123abcd"
        (commit / "files").mkdir(parents=True)
        self.write(commit / "metadata", f"[Application]\nname={app_id}\n")
        if metainfo is not None:
            self.write(commit / f"files/share/metainfo/{app_id}.metainfo.xml", metainfo)
        (app / arch / branch / "active").symlink_to("0123abcd")
        (app / "current").symlink_to(f"{arch}/{branch}")
        return app

    def snap(self, name: str, snap_yaml: str, revision: str = "42") -> Path:
        """/snap/<name>/<revision>/meta/snap.yaml and the ``current`` link to the revision."""
        self.write(f"snap/{name}/{revision}/meta/snap.yaml", snap_yaml)
        return self.symlink(f"snap/{name}/current", revision)

    # ------------------------------------------------------------ sessions, power

    @staticmethod
    def utmp_record(kind: int, user: str, line: str, seconds: int, host: str = "", pid: int = 1000) -> bytes:
        """One 384-byte utmp record (``kind``: 2 BOOT_TIME, 6 LOGIN_PROCESS, 7 USER_PROCESS, 8 DEAD_PROCESS)."""
        record = bytearray(UTMP_SIZE)
        struct.pack_into("<h", record, 0, kind)
        struct.pack_into("<i", record, UT_PID, pid)
        struct.pack_into("32s", record, UT_LINE, line.encode())
        struct.pack_into("4s", record, UT_ID, line[-4:].encode())
        struct.pack_into("32s", record, UT_USER, user.encode())
        struct.pack_into("256s", record, UT_HOST, host.encode())
        struct.pack_into("<ii", record, UT_TV_SEC, seconds, 123456)
        return bytes(record)

    def utmp(self, *records: bytes) -> Path:
        """/run/utmp made of the given records."""
        return self.write("run/utmp", b"".join(records))

    def proc_stat(self, btime: int) -> Path:
        """/proc/stat with a ``btime`` line among the usual ones."""
        return self.write(
            "proc/stat",
            "cpu  10 0 20 300 0 0 0 0 0 0\ncpu0 10 0 20 300 0 0 0 0 0 0\nintr 1 2 3\nctxt 4567\n"
            f"btime {btime}\nprocesses 890\nprocs_running 1\nprocs_blocked 0\n",
        )


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystem:
    """An empty fake machine; tests add the files they need."""
    return FakeSystem(tmp_path / "root")
