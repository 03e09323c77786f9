"""Which devices in a workstation's inventory are equipment of regulation 11.12, and how items are recognised.

**Equipment.** From one inventory:

- the PC itself (kind ``pc``), known by its agent id and its system serial (unless the firmware wrote
  a placeholder such as "To be filled by O.E.M.");
- every print queue (kind ``printer``), known by its URI and its name, except queues with no printer
  behind them (CUPS-PDF, a file, Windows' PDF and XPS writers, fax, OneNote);
- a USB device whose device or interface classes include *printer* (kind ``printer``), *image*
  (still-image: ``scanner``) or *smart card* (``card_reader``), in that order of precedence (a
  multifunction printer with a card slot is a printer);
- a USB device of class HID, vendor-specific or other whose vendor or product string names it as a
  signature pad (签名/签字/手写/signature …), an evaluator (评价/满意度/evaluator/rating …) or an
  ID/IC card reader (读卡/身份证/card reader …). A HID device says nothing more about itself in the
  inventory, so the name is the only way to tell a signature pad from a keyboard.

Everything else is not equipment: keyboards, mice and other HID devices without such a name, hubs,
storage (removable storage is regulation 11.2's business), audio, video, wireless and network
adapters. Such a device is still *recognised* when an asset was registered with its identity (a
signature pad whose product string says nothing is registered by hand and then found).

A USB printer usually appears twice, as a USB device and as the print queue on it; the two are one
item when the queue's URI carries the device's serial (``usb://…?serial=…``, ``hp:/usb/…?serial=…``),
or else when the workstation has exactly one USB printer and exactly one queue
with a USB URI (CUPS ``usb://``, HPLIP ``hp:/usb/``, Windows ``USB001``).

**Identity.** An item has keys. *Strong* keys name one physical thing: an agent id, a system serial,
``vendor:product:serial`` of a USB device with a serial, a print queue's URI when it is a network
address or carries a serial (Windows' ``USB001`` is on every PC and does not). *Weak* keys name a
model or a queue name that many workstations share: ``vendor:product`` alone, a queue's name. An asset
matches a discovered item on a strong key wherever it is seen, and on a weak key only on a workstation
of the asset's own window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controller.assets.fields import system_serial
from protos.counterguard.v1 import facts_pb2

Key = tuple[str, ...]
STRONG = frozenset({"agent", "system-serial", "usb", "printer-uri"})

_CLASS_KINDS = (
    (facts_pb2.DEVICE_CLASS_PRINTER, "printer"),
    (facts_pb2.DEVICE_CLASS_IMAGE, "scanner"),
    (facts_pb2.DEVICE_CLASS_SMART_CARD, "card_reader"),
)
_NAMED_CLASSES = frozenset({facts_pb2.DEVICE_CLASS_HID, facts_pb2.DEVICE_CLASS_VENDOR_SPECIFIC,
                            facts_pb2.DEVICE_CLASS_OTHER, facts_pb2.DEVICE_CLASS_UNSPECIFIED})
_NAME_KINDS = (
    ("signature_pad", ("signature", "signpad", "sign pad", "签名", "签字", "手写")),
    ("evaluator", ("evaluat", "评价", "评议", "满意度", "rating")),
    ("card_reader", ("card reader", "cardreader", "读卡", "身份证", "id card", "idcard", "社保卡")),
)
_USB_URI_PREFIXES = ("usb:", "hp:/usb/", "usb0")  # CUPS and HPLIP URIs; Windows ports USB001 …
_NETWORK_URI_PREFIXES = ("ipp://", "ipps://", "http://", "https://", "socket://", "lpd://", "smb://", "dnssd://",
                         "hp:/net/", "ip_", "\\\\")
# Queues with no printer behind them: CUPS-PDF, files, Windows' PDF/XPS writers, fax and OneNote.
_VIRTUAL_URI_PREFIXES = ("cups-pdf:", "file:", "portprompt:", "nul:", "xpsport:", "shrfax:", "pdf:", "onenote",
                         "send to microsoft onenote")


@dataclass(frozen=True)
class Discovered:
    """One item seen in a workstation's inventory."""

    kind: str  # the asset kind it would be registered as
    equipment: bool  # reported when nobody registered it
    description: str
    keys: tuple[Key, ...]
    identity: str  # how to register it: ``--agent …``, ``--usb …``, ``--printer …``


def strong(key: Key) -> bool:
    return key[0] in STRONG


def usb_keys(vendor_id: str, product_id: str, serial: str) -> tuple[Key, ...]:
    model: Key = ("usb-model", vendor_id.lower(), product_id.lower())
    return (("usb", *model[1:], serial), model) if serial else (model,)


def printer_keys(name: str, uri: str) -> tuple[Key, ...]:
    keys: list[Key] = [("printer-uri", uri)] if unique_uri(uri) else []
    return (*keys, ("printer-name", name)) if name else tuple(keys)


def unique_uri(uri: str) -> bool:
    """Whether a print queue's URI (or Windows port) names one printer: a network address or a USB serial."""
    lower = uri.lower()
    return "serial=" in lower or lower.startswith(_NETWORK_URI_PREFIXES)


def asset_keys(kind: str, agent_id: str | None, vendor_id: str, product_id: str, serial: str, printer_name: str,
               printer_uri: str) -> tuple[Key, ...]:
    """The keys an asset is recognised by (see the module docstring); none for what cannot be discovered.

    A USB asset with a serial is recognised by that serial only, one without by its model.
    """
    keys: list[Key] = []
    if kind == "pc":
        keys += [("agent", agent_id)] if agent_id else []
        keys += [("system-serial", serial)] if serial else []
        return tuple(keys)
    if vendor_id:
        keys.append(usb_keys(vendor_id, product_id, serial)[0])
    return (*keys, *printer_keys(printer_name, printer_uri))


def discover(agent_id: str, inventory: facts_pb2.InventorySnapshot) -> list[Discovered]:
    """The PC, its print queues and its USB devices (hubs left out), equipment or not."""
    devices = [d for d in inventory.usb_devices if d.device_class != facts_pb2.DEVICE_CLASS_HUB]
    printers = list(inventory.printers)
    folded = _fold_usb_printers(devices, printers)
    items = [_pc(agent_id, inventory)]
    for printer in printers:
        device = folded.get(printer.name)
        items.append(_printer(printer, device))
    items += [_usb(d) for d in devices if not any(d is f for f in folded.values())]
    return items


def inventory_keys(agent_id: str, inventory: facts_pb2.InventorySnapshot) -> set[Key]:
    """Every key of every item :func:`discover` would find (the same set, without classifying anything)."""
    keys = set(_pc_keys(agent_id, inventory))
    for printer in inventory.printers:
        keys.update(printer_keys(printer.name, printer.uri))
    for device in inventory.usb_devices:
        if device.device_class != facts_pb2.DEVICE_CLASS_HUB:
            keys.update(usb_keys(device.vendor_id, device.product_id, device.serial))
    return keys


def _pc_keys(agent_id: str, inventory: facts_pb2.InventorySnapshot) -> tuple[Key, ...]:
    serial = system_serial(inventory.system.serial)
    return (("agent", agent_id), ("system-serial", serial)) if serial else (("agent", agent_id),)


def _pc(agent_id: str, inventory: facts_pb2.InventorySnapshot) -> Discovered:
    system = inventory.system
    model = " ".join(p for p in (system.vendor, system.model) if p) or "PC"
    serial = system_serial(system.serial)
    description = f"{model} {inventory.hostname}".strip() + (f", serial {serial}" if serial else "")
    return Discovered("pc", True, description, _pc_keys(agent_id, inventory), f"--agent {agent_id}")


def _printer(printer: facts_pb2.Printer, device: facts_pb2.UsbDevice | None) -> Discovered:
    keys = printer_keys(printer.name, printer.uri)
    if device is not None:
        keys += usb_keys(device.vendor_id, device.product_id, device.serial)
    model = printer.make_model or printer.info
    description = f"{printer.name}" + (f" ({model})" if model else "") + (f" at {printer.uri}" if printer.uri else "")
    virtual = printer.uri.lower().startswith(_VIRTUAL_URI_PREFIXES)
    return Discovered("printer", not virtual, description, keys, f"--printer {_quoted(printer.name)}")


def _usb(device: facts_pb2.UsbDevice) -> Discovered:
    kind = usb_kind(device)
    ids = f"{device.vendor_id}:{device.product_id}" + (f":{device.serial}" if device.serial else "")
    name = " ".join(p for p in (device.vendor, device.product) if p)
    description = f"{name} (USB {ids})" if name else f"USB {ids}"
    return Discovered(kind or "other", kind is not None, description,
                      usb_keys(device.vendor_id, device.product_id, device.serial), f"--usb {ids}")


def usb_kind(device: facts_pb2.UsbDevice) -> str | None:
    """The equipment kind of a USB device, or ``None`` when it is not equipment (see the module docstring)."""
    classes = {device.device_class, *device.interface_classes}
    for device_class, kind in _CLASS_KINDS:
        if device_class in classes:
            return kind
    if not classes <= _NAMED_CLASSES:
        return None
    name = f"{device.vendor} {device.product}".lower()
    for kind, words in _NAME_KINDS:
        if any(word in name for word in words):
            return kind
    return None


def _fold_usb_printers(devices: Iterable[facts_pb2.UsbDevice],
                       printers: list[facts_pb2.Printer]) -> dict[str, facts_pb2.UsbDevice]:
    """Print queue name → the USB printer it prints on, where that can be told (see the module docstring)."""
    usb_printers = [d for d in devices if usb_kind(d) == "printer"]
    folded: dict[str, facts_pb2.UsbDevice] = {}
    for device in usb_printers:
        if not device.serial:
            continue
        for printer in printers:
            if f"serial={device.serial}" in printer.uri and printer.name not in folded:
                folded[printer.name] = device
                break
    usb_queues = [p for p in printers if p.uri.lower().startswith(_USB_URI_PREFIXES)]
    if not folded and len(usb_printers) == 1 and len(usb_queues) == 1:
        folded[usb_queues[0].name] = usb_printers[0]
    return folded


def _quoted(text: str) -> str:
    return f"'{text}'" if any(c.isspace() for c in text) else text
