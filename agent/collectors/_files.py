"""Small, forgiving file readers shared by the collectors.

Collectors read pseudo-files (sysfs, procfs) and configuration files that may be absent, root-only or
not files at all. These helpers turn every such case into an empty value, so a missing field never
stops a collection. Only ``OSError`` and ``ValueError`` are caught: anything else is a bug.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp


def read_text(path: Path) -> str:
    """The file's text with surrounding whitespace and NULs stripped; ``""`` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip(" \t\r\n\x00")
    except (OSError, ValueError):
        return ""


def read_bytes(path: Path) -> bytes:
    """The file's bytes; ``b""`` when it cannot be read."""
    try:
        return path.read_bytes()
    except (OSError, ValueError):
        return b""


def read_int(path: Path, base: int = 10) -> int | None:
    """The file's content as an integer; ``None`` when it cannot be read or is not a number."""
    text = read_text(path)
    try:
        return int(text, base) if text else None
    except ValueError:
        return None


def mtime(path: Path, *, follow_symlinks: bool = True) -> dt.datetime | None:
    """When the file (or, with ``follow_symlinks=False``, the link itself) was last modified, aware UTC."""
    try:
        seconds = os.stat(path, follow_symlinks=follow_symlinks).st_mtime
    except (OSError, ValueError):
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def arrival_time(path: Path) -> dt.datetime | None:
    """When the file arrived on this disk (its inode change time), aware UTC.

    Package managers keep the modification time a file had in the package, so ``mtime`` is often the
    build date; the change time cannot be set back and is the moment the file was written here.
    """
    try:
        seconds = os.stat(path).st_ctime
    except (OSError, ValueError):
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def timestamp(moment: dt.datetime) -> Timestamp:
    """A protobuf ``Timestamp`` for an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def list_dir(path: Path) -> list[Path]:
    """The entries of a directory, sorted by name; ``[]`` when it is absent or unreadable."""
    try:
        return sorted(path.iterdir())
    except (OSError, ValueError):
        return []
