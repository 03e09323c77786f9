"""Linux network inventory: interfaces from ``/sys/class/net``, addresses from a reader, gateway from procfs.

Addresses come from a reader function (``psutil.net_if_addrs`` in production) so tests can supply them;
everything else is read from files under :class:`~agent.collectors.Roots`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from agent.collectors import Roots
from agent.collectors._files import list_dir, read_int, read_text
from protos.counterguard.v1 import facts_pb2

_RTF_UP = 0x0001
_RTF_GATEWAY = 0x0002


class InterfaceAddress(Protocol):
    """One address of an interface, the shape of ``psutil``'s ``snicaddr``."""

    @property
    def family(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def netmask(self) -> str | None: ...


AddressReader = Callable[[], Mapping[str, Sequence[InterfaceAddress]]]
"""Returns the addresses of every interface by name, like ``psutil.net_if_addrs``."""


def cidr(address: str, netmask: str | None) -> str:
    """``("192.168.1.5", "255.255.255.0")`` → ``"192.168.1.5/24"``; IPv6 zone suffixes (``%eth0``) dropped."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    prefix: int = ip.max_prefixlen
    if netmask:
        prefix = bin(int(ipaddress.ip_address(netmask.split("%", 1)[0]))).count("1")
    return f"{ip}/{prefix}"


def _addresses(entries: Sequence[InterfaceAddress]) -> list[str]:
    """The IPv4 and IPv6 addresses of one interface in CIDR form; link-layer entries are skipped."""
    result: list[str] = []
    for entry in entries:
        if entry.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            result.append(cidr(entry.address, entry.netmask))
        except ValueError:
            continue
    return result


def network_interfaces(roots: Roots, read_addresses: AddressReader) -> list[facts_pb2.NetworkInterface]:
    """Every interface but loopback: MAC, addresses, link state, speed, and whether it is virtual."""
    try:
        addresses = read_addresses()
    except OSError:
        addresses = {}
    result: list[facts_pb2.NetworkInterface] = []
    for iface in list_dir(roots.sysfs / "class" / "net"):
        if iface.name == "lo" or not iface.is_dir():
            continue
        speed = read_int(iface / "speed") or 0  # unreadable (EINVAL) while the link is down, -1 when unknown
        device = iface / "device"
        result.append(
            facts_pb2.NetworkInterface(
                name=iface.name,
                mac=read_text(iface / "address").lower(),
                addresses=_addresses(addresses.get(iface.name, ())),
                up=read_text(iface / "operstate") == "up",
                speed_mbps=max(speed, 0),
                virtual=not (device.exists() or device.is_symlink()),
            )
        )
    return result


def default_gateway(roots: Roots) -> str:
    """The IPv4 default gateway with the lowest metric, from ``/proc/net/route``; ``""`` when there is none."""
    best: tuple[int, str] | None = None
    for line in read_text(roots.procfs / "net" / "route").splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination, gateway, flags = int(fields[1], 16), int(fields[2], 16), int(fields[3], 16)
            metric, mask = int(fields[6]), int(fields[7], 16)
        except ValueError:
            continue
        if destination == 0 and mask == 0 and flags & _RTF_UP and flags & _RTF_GATEWAY:
            candidate = (metric, socket.inet_ntoa(struct.pack("<L", gateway)))
            best = candidate if best is None or candidate < best else best
    return best[1] if best else ""
