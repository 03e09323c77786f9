"""Local accounts and groups from ``<etc>/passwd`` and ``<etc>/group`` (never the shadow file).

Rules about who may use a workstation (R11.1, R11.3) compare session accounts with these.
"""

from __future__ import annotations

from agent.collectors import Roots
from agent.collectors._files import read_text
from protos.counterguard.v1 import facts_pb2


def _records(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line or line.startswith(("#", "+", "-")):  # NIS compat lines are not local accounts
            continue
        parts = line.split(":")
        if len(parts) >= fields and parts[2].isdigit():
            rows.append(parts)
    return rows


def local_users(roots: Roots) -> list[facts_pb2.LocalUser]:
    """Accounts in ``passwd`` order; the full name is the first GECOS field."""
    return [
        facts_pb2.LocalUser(name=p[0], uid=int(p[2]), full_name=p[4].split(",")[0], home=p[5], shell=p[6])
        for p in _records(read_text(roots.etc / "passwd"), 7)
    ]


def local_groups(roots: Roots) -> list[facts_pb2.LocalGroup]:
    """Groups in ``group`` order with their listed members."""
    return [
        facts_pb2.LocalGroup(name=g[0], gid=int(g[2]), members=[m for m in g[3].split(",") if m])
        for g in _records(read_text(roots.etc / "group"), 4)
    ]
