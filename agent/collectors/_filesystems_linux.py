"""Mounted local file systems from ``<procfs>/self/mounts``, with their size and free space.

Pseudo, network and overlay file systems are left out: the inventory is about the disks of this PC.
A mount point whose size cannot be read (unreachable, permission) is kept with zero sizes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from agent.collectors import Roots
from agent.collectors._files import read_text
from protos.counterguard.v1 import facts_pb2

LOCAL_TYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "zfs", "vfat", "exfat", "ntfs",
     "ntfs3", "fuseblk", "hfsplus", "iso9660", "udf"}
)
StatVfs = Callable[[str], os.statvfs_result]


def _unescape(field: str) -> str:
    """Mount tables write space, tab, newline and backslash as octal escapes (``\\040``)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystems(roots: Roots, statvfs: StatVfs = os.statvfs) -> list[facts_pb2.Filesystem]:
    """Local file systems in mount order; a mount point mounted twice is listed once."""
    found: dict[str, facts_pb2.Filesystem] = {}
    for line in read_text(roots.procfs / "self" / "mounts").splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[2] not in LOCAL_TYPES:
            continue
        device, mount_point = _unescape(parts[0]), _unescape(parts[1])
        entry = facts_pb2.Filesystem(device=device, mount_point=mount_point, fs_type=parts[2])
        try:
            st = statvfs(mount_point)
            entry.total_bytes = st.f_blocks * st.f_frsize
            entry.free_bytes = st.f_bavail * st.f_frsize
        except OSError:
            pass
        found[mount_point] = entry
    return list(found.values())
