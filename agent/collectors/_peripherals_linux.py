"""Linux peripherals: USB devices from ``/sys/bus/usb/devices`` and CUPS printers from ``printers.conf``.

USB: every entry with an ``idVendor`` file is a device; interface entries (``1-1:1.0``) have none and are
read only to class their device. Root hubs (``usb1``, ``usb2``...) are skipped: they are the host controllers built into
the machine, not something plugged in. External hubs are kept (class HUB).

Printers: the queues CUPS knows, from ``<etc>/cups/printers.conf``. A machine without CUPS has none.
Credentials in a device URI (``smb://user:password@host/queue``) are removed before they leave the machine.
"""

from __future__ import annotations

import re
from pathlib import Path

from agent.collectors import Roots
from agent.collectors._classify import usb_class, usb_device_class
from agent.collectors._files import list_dir, read_int, read_text
from protos.counterguard.v1 import facts_pb2

_PRINTER_OPEN = re.compile(r"^<(Default)?Printer\s+(.+?)>$")
_URI_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
_PRINTER_KEYS: dict[str, str] = {"DeviceURI": "uri", "MakeModel": "make_model", "Location": "location", "Info": "info"}


def _interface_classes(device: Path) -> list[facts_pb2.DeviceClass]:
    """The classes of the device's active interfaces (``<bus_id>:<cfg>.<n>``), in order, each once."""
    classes: list[facts_pb2.DeviceClass] = []
    for interface in list_dir(device):
        if not interface.name.startswith(f"{device.name}:"):
            continue
        code = read_int(interface / "bInterfaceClass", 16)
        if code is not None and usb_class(code) not in classes:
            classes.append(usb_class(code))
    return classes


def _usb_device(device: Path) -> facts_pb2.UsbDevice:
    """One USB device: ids, strings, and its class from the device or, when it defers, its interfaces."""
    interfaces = _interface_classes(device)
    return facts_pb2.UsbDevice(
        bus_id=device.name,
        vendor_id=read_text(device / "idVendor").lower(),
        product_id=read_text(device / "idProduct").lower(),
        vendor=read_text(device / "manufacturer"),
        product=read_text(device / "product"),
        serial=read_text(device / "serial"),
        device_class=usb_device_class(read_int(device / "bDeviceClass", 16), interfaces),
        interface_classes=interfaces,
    )


def usb_devices(roots: Roots) -> list[facts_pb2.UsbDevice]:
    """Every USB device plugged into the machine (root hubs and interface entries left out)."""
    result: list[facts_pb2.UsbDevice] = []
    for entry in list_dir(roots.sysfs / "bus" / "usb" / "devices"):
        if entry.name.startswith("usb") or not (entry / "idVendor").is_file():
            continue
        result.append(_usb_device(entry))
    return result


def _without_credentials(uri: str) -> str:
    """``smb://user:secret@host/q`` → ``smb://host/q``: a printer URI may carry a password."""
    return _URI_USERINFO.sub(r"\1", uri)


def parse_printers_conf(text: str) -> list[facts_pb2.Printer]:
    """The ``<Printer>`` and ``<DefaultPrinter>`` blocks of a CUPS ``printers.conf``."""
    printers: list[facts_pb2.Printer] = []
    current: facts_pb2.Printer | None = None
    for raw in text.splitlines():
        line = raw.strip()
        opened = _PRINTER_OPEN.match(line)
        if opened:
            current = facts_pb2.Printer(name=opened.group(2), is_default=bool(opened.group(1)))
        elif current is not None and line in ("</Printer>", "</DefaultPrinter>"):
            printers.append(current)
            current = None
        elif current is not None:
            key, _, value = line.partition(" ")
            if key in _PRINTER_KEYS:
                value = _without_credentials(value.strip()) if key == "DeviceURI" else value.strip()
                setattr(current, _PRINTER_KEYS[key], value)
    return printers


def printers(roots: Roots) -> list[facts_pb2.Printer]:
    """The CUPS print queues; an empty list when CUPS is not installed or its file cannot be read."""
    return parse_printers_conf(read_text(roots.etc / "cups" / "printers.conf"))
