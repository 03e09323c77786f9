"""Logged-in sessions from the utmp file (``/run/utmp``), parsed with ``struct``.

The record is glibc's ``struct utmp`` as laid out on x86_64, aarch64 and the other 64-bit little-endian
Linux ports (LoongArch, mips64el): 384 bytes, with 32-bit ``ut_tv`` seconds at offset 340. Only
``USER_PROCESS`` records are sessions; a truncated last record is ignored.

A host that is an X display (``:0``), as display managers write for local graphical logins, is a local
session and reported without a host.
"""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path
from typing import NamedTuple

from agent.collectors._files import read_bytes, timestamp
from protos.counterguard.v1 import facts_pb2

USER_PROCESS = 7

# ut_type, pad, ut_pid, ut_line[32], ut_id[4], ut_user[32], ut_host[256], ut_exit (2 shorts), ut_session,
# ut_tv (sec, usec), ut_addr_v6[4], reserved[20].
UTMP_RECORD = struct.Struct("<h2xi32s4s32s256shhiii16s20s")
assert UTMP_RECORD.size == 384


class UtmpRecord(NamedTuple):
    """The fields of one utmp record that sessions need."""

    type: int
    pid: int
    line: str
    user: str
    host: str
    seconds: int
    microseconds: int


def _text(raw: bytes) -> str:
    """A NUL-padded C string as text."""
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


def read_utmp(path: Path) -> list[UtmpRecord]:
    """Every complete record of a utmp file; ``[]`` when it is absent or unreadable."""
    data = read_bytes(path)
    usable = len(data) - len(data) % UTMP_RECORD.size
    return [
        UtmpRecord(kind, pid, _text(line), _text(user), _text(host), sec, usec)
        for kind, pid, line, _id, user, host, _term, _exit, _sess, sec, usec, _addr, _res in UTMP_RECORD.iter_unpack(
            data[:usable]
        )
    ]


def _session(record: UtmpRecord) -> facts_pb2.UserSession:
    """A ``UserSession`` for one ``USER_PROCESS`` record (login time to the second, as ``who`` shows it)."""
    started = dt.datetime.fromtimestamp(record.seconds, dt.UTC)
    return facts_pb2.UserSession(
        username=record.user,
        terminal=record.line,
        host="" if record.host.startswith(":") else record.host,
        started_at=timestamp(started),
    )


def user_sessions(path: Path) -> list[facts_pb2.UserSession]:
    """The sessions logged in now according to the utmp file at ``path``."""
    return [_session(record) for record in read_utmp(path) if record.type == USER_PROCESS and record.user]
