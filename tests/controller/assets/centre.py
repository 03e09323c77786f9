"""A small centre for the equipment register tests: units, windows, agents, and inventories they report.

Inventories go through the real ingest service (and, when the test asks, the real rules service),
one fact per report, the way an agent sends its full inventory when something changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from controller.convert import datetime_to_timestamp
from controller.db import session_scope
from controller.ingest import IngestService
from controller.models import Agent
from controller.org.records import UNIT, WINDOW
from controller.rules.service import RulesService
from protos.counterguard.v1 import facts_pb2 as pb

UNITS = {"tax": "税务局", "hrss": "人社局"}
WINDOWS = {"W01": "tax", "W02": "tax", "W03": "hrss", "W09": None}  # W09: a window no unit staffs yet


def add_org(engine: Engine, clock: Any) -> None:
    with engine.begin() as conn:
        conn.execute(insert(UNIT), [{"code": code, "name": name, "home_department": "", "created_by": "test",
                                     "created_at": clock()} for code, name in UNITS.items()])
        conn.execute(insert(WINDOW), [{"code": code, "unit": unit, "description": "", "created_by": "test",
                                       "created_at": clock()} for code, unit in WINDOWS.items()])


def add_agent(engine: Engine, clock: Any, agent_id: str, window: str, *, hostname: str = "",
              revoked: bool = False) -> None:
    with session_scope(engine) as session:
        session.add(Agent(id=agent_id, hostname=hostname or agent_id, window=window, unit=WINDOWS.get(window),
                          enrolled_at=clock(), cert_serial=f"serial-{agent_id}", cert_fingerprint=f"fp-{agent_id}",
                          cert_not_after=clock() + dt.timedelta(days=365), revoked_at=clock() if revoked else None))


class Reporter:
    """Sends an agent's inventories through the real ingest (and rules, if given) at the clock's time."""

    def __init__(self, engine: Engine, clock: Any, rules: RulesService | None = None) -> None:
        self.ingest = IngestService(engine, clock)
        self.clock = clock
        self.rules = rules
        self.sequences: dict[str, int] = {}

    def inventory(self, agent_id: str, snapshot: pb.InventorySnapshot) -> None:
        sequence = self.sequences.get(agent_id, 0) + 1
        self.sequences[agent_id] = sequence
        fact = pb.Fact(sequence=sequence, observed_at=datetime_to_timestamp(self.clock()), inventory=snapshot)
        self.ingest.ingest(agent_id, [fact])
        if self.rules is not None:
            self.rules.on_ingest(agent_id, [fact])


def usb(vendor_id: str, product_id: str, serial: str, device_class: int, *interfaces: int, vendor: str = "",
        product: str = "", bus_id: str = "1-1") -> pb.UsbDevice:
    return pb.UsbDevice(bus_id=bus_id, vendor_id=vendor_id, product_id=product_id, vendor=vendor, product=product,
                        serial=serial, device_class=device_class, interface_classes=list(interfaces))


KEYBOARD = usb("046d", "c31c", "", pb.DEVICE_CLASS_HID, pb.DEVICE_CLASS_HID, vendor="Logitech",
               product="USB Keyboard", bus_id="1-2")
MOUSE = usb("046d", "c077", "", pb.DEVICE_CLASS_HID, pb.DEVICE_CLASS_HID, vendor="Logitech",
            product="USB Optical Mouse", bus_id="1-3")
HUB = usb("05e3", "0610", "", pb.DEVICE_CLASS_HUB, pb.DEVICE_CLASS_HUB, vendor="Genesys", product="USB2.0 Hub",
          bus_id="1-4")
STICK = usb("0781", "5581", "AA01", pb.DEVICE_CLASS_STORAGE, pb.DEVICE_CLASS_STORAGE, vendor="SanDisk",
            product="Ultra", bus_id="1-5")
CARD_READER = usb("076b", "3021", "CR-7781", pb.DEVICE_CLASS_SMART_CARD, pb.DEVICE_CLASS_SMART_CARD,
                  vendor="OMNIKEY", product="CardMan 3021", bus_id="1-6")
SCANNER = usb("04a9", "1909", "SC-4410", pb.DEVICE_CLASS_IMAGE, pb.DEVICE_CLASS_IMAGE, vendor="Canon",
              product="LiDE 110", bus_id="1-7")
USB_PRINTER = usb("03f0", "042a", "VNC3B12345", pb.DEVICE_CLASS_PRINTER, pb.DEVICE_CLASS_PRINTER,
                  pb.DEVICE_CLASS_VENDOR_SPECIFIC, vendor="HP", product="LaserJet M1136 MFP", bus_id="1-8")
PRINT_QUEUE = pb.Printer(name="HP_LaserJet_M1136", uri="usb://HP/LaserJet%20M1136%20MFP?serial=VNC3B12345",
                         make_model="HP LaserJet M1136 MFP, hpcups 3.22")
SIGNATURE_PAD = usb("1b8e", "0101", "", pb.DEVICE_CLASS_UNSPECIFIED, pb.DEVICE_CLASS_HID,
                    vendor="汉王", product="手写签名板 ESP370", bus_id="1-9")
EVALUATOR = usb("0483", "5750", "", pb.DEVICE_CLASS_HID, pb.DEVICE_CLASS_HID, vendor="STMicro",
                product="服务评价器", bus_id="1-10")


def pc(*, serial: str = "PC-W01-0001", disk_serial: str = "S1", hostname: str = "w01",
       devices: Iterable[pb.UsbDevice] = (), printers: Iterable[pb.Printer] = ()) -> pb.InventorySnapshot:
    """A counter PC's inventory; ``disk_serial`` changes its one component that a test swaps."""
    return pb.InventorySnapshot(
        hostname=hostname,
        system=pb.SystemInfo(vendor="Lenovo", model="M720", serial=serial, board_serial=f"MB-{serial}"),
        cpu=pb.CpuInfo(model="Intel Core i5-8500"),
        memory=pb.MemoryInfo(total_bytes=16 * 2**30),
        disks=[pb.Disk(name="sda", model="SSD 860", serial=disk_serial, size_bytes=500_000_000_000)],
        os=pb.OsInfo(family="linux", name="UOS", version="20", machine_id=f"m-{serial}"),
        usb_devices=list(devices),
        printers=list(printers),
    )
