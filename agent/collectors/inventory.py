"""The inventory collector: hardware, peripherals and OS of the workstation as one ``InventorySnapshot``.

Sent in full when the agent starts and daily, otherwise when it changed (the caller compares). The back
end for this platform is chosen once, at import; Linux is ``_inventory_linux``.
"""

from __future__ import annotations

import sys

import psutil

from agent.collectors import Roots
from agent.collectors._network_linux import AddressReader
from protos.counterguard.v1 import facts_pb2

if sys.platform.startswith("linux"):
    from agent.collectors import _inventory_linux as _backend
elif sys.platform == "win32":
    from agent.collectors import _inventory_windows as _backend
else:  # pragma: no cover - no other platform has a back end
    raise NotImplementedError(f"no inventory collector for platform {sys.platform!r}")

__all__ = ["collect_inventory"]


def collect_inventory(
    roots: Roots = Roots(), *, read_addresses: AddressReader = psutil.net_if_addrs
) -> facts_pb2.InventorySnapshot:
    """Everything the workstation is made of. Parts the platform does not expose stay empty; nothing raises.

    ``read_addresses`` returns the addresses of each network interface (``psutil.net_if_addrs`` by default;
    tests pass their own).
    """
    return _backend.collect_inventory(roots, read_addresses)
