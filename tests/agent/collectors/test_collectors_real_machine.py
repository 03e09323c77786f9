"""Smoke tests on the real machine: the collectors run against the live /sys, /proc and dpkg database."""

from __future__ import annotations

import os
import platform

import pytest

from agent.collectors.inventory import collect_inventory
from agent.collectors.software import collect_software
from protos.counterguard.v1 import facts_pb2

pytestmark = pytest.mark.skipif(not os.path.exists("/var/lib/dpkg/status"), reason="needs a Debian-based system")


def test_inventory_of_this_machine_is_sane() -> None:
    snapshot = collect_inventory()
    assert snapshot.hostname == platform.node()
    assert snapshot.memory.total_bytes > 0
    assert snapshot.cpu.logical_cores >= 1 and snapshot.cpu.physical_cores >= 1
    assert snapshot.cpu.architecture == platform.machine()
    assert snapshot.os.family == "linux" and snapshot.os.kernel == os.uname().release
    assert snapshot.os.id  # os-release ID, e.g. "debian"
    assert all(d.size_bytes % 512 == 0 for d in snapshot.disks)
    assert all(not d.name.startswith(("loop", "zram", "dm-")) for d in snapshot.disks)
    assert all(i.name != "lo" for i in snapshot.network_interfaces)
    assert facts_pb2.InventorySnapshot.FromString(snapshot.SerializeToString()) == snapshot


def test_software_of_this_machine_includes_dpkg_with_its_section() -> None:
    items = collect_software()
    dpkg = [i for i in items if i.source == facts_pb2.SOFTWARE_SOURCE_DPKG and i.name == "dpkg"]
    assert len(dpkg) == 1
    assert dpkg[0].section == "admin" and dpkg[0].version and dpkg[0].HasField("install_date")
    keys = [(i.source, i.name) for i in items]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
