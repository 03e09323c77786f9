"""Code tables shared by every platform back end: USB class codes and SMBIOS chassis types.

Linux reads these numbers from sysfs, Windows from WMI and device instance ids; both name them here.
"""

from __future__ import annotations

from collections.abc import Iterable

from protos.counterguard.v1 import facts_pb2

DeviceClass = facts_pb2.DeviceClass

_USB_CLASSES: dict[int, DeviceClass] = {
    0x01: facts_pb2.DEVICE_CLASS_AUDIO,
    0x02: facts_pb2.DEVICE_CLASS_COMMUNICATIONS,
    0x03: facts_pb2.DEVICE_CLASS_HID,
    0x06: facts_pb2.DEVICE_CLASS_IMAGE,
    0x07: facts_pb2.DEVICE_CLASS_PRINTER,
    0x08: facts_pb2.DEVICE_CLASS_STORAGE,
    0x09: facts_pb2.DEVICE_CLASS_HUB,
    0x0A: facts_pb2.DEVICE_CLASS_COMMUNICATIONS,
    0x0B: facts_pb2.DEVICE_CLASS_SMART_CARD,
    0x0E: facts_pb2.DEVICE_CLASS_VIDEO,
    0xE0: facts_pb2.DEVICE_CLASS_WIRELESS,
    0xFF: facts_pb2.DEVICE_CLASS_VENDOR_SPECIFIC,
}

# Device class codes meaning "look at the interfaces": 0x00 (per interface) and 0xEF (miscellaneous/IAD).
USB_CLASS_FROM_INTERFACES: frozenset[int] = frozenset({0x00, 0xEF})

# When the interfaces disagree, the class that says most about what the device is wins: a multifunction
# printer with a card reader is a printer, a webcam with a microphone is a video device, a keyboard that
# also offers mass storage is storage. Vendor-specific and other interfaces only decide when alone.
_INTERFACE_PRIORITY: tuple[DeviceClass, ...] = (
    facts_pb2.DEVICE_CLASS_PRINTER,
    facts_pb2.DEVICE_CLASS_IMAGE,
    facts_pb2.DEVICE_CLASS_VIDEO,
    facts_pb2.DEVICE_CLASS_STORAGE,
    facts_pb2.DEVICE_CLASS_SMART_CARD,
    facts_pb2.DEVICE_CLASS_AUDIO,
    facts_pb2.DEVICE_CLASS_WIRELESS,
    facts_pb2.DEVICE_CLASS_COMMUNICATIONS,
    facts_pb2.DEVICE_CLASS_HID,
    facts_pb2.DEVICE_CLASS_HUB,
    facts_pb2.DEVICE_CLASS_VENDOR_SPECIFIC,
    facts_pb2.DEVICE_CLASS_OTHER,
)


def usb_class(code: int) -> DeviceClass:
    """The device class for a USB class code (``bDeviceClass`` or ``bInterfaceClass``)."""
    return _USB_CLASSES.get(code, facts_pb2.DEVICE_CLASS_OTHER)


def usb_device_class(device_code: int | None, interface_classes: Iterable[DeviceClass]) -> DeviceClass:
    """The class of a whole device: its own code, or when that defers to them, its interfaces' classes."""
    if device_code is not None and device_code not in USB_CLASS_FROM_INTERFACES:
        return usb_class(device_code)
    present = set(interface_classes)
    for candidate in _INTERFACE_PRIORITY:
        if candidate in present:
            return candidate
    return facts_pb2.DEVICE_CLASS_UNSPECIFIED


# SMBIOS 3.x, table "System Enclosure or Chassis Types" (also WMI Win32_SystemEnclosure.ChassisTypes).
_CHASSIS_TYPES: dict[int, str] = {
    1: "Other", 2: "Unknown", 3: "Desktop", 4: "Low Profile Desktop", 5: "Pizza Box", 6: "Mini Tower",
    7: "Tower", 8: "Portable", 9: "Laptop", 10: "Notebook", 11: "Hand Held", 12: "Docking Station",
    13: "All in One", 14: "Sub Notebook", 15: "Space-saving", 16: "Lunch Box", 17: "Main Server Chassis",
    18: "Expansion Chassis", 19: "SubChassis", 20: "Bus Expansion Chassis", 21: "Peripheral Chassis",
    22: "RAID Chassis", 23: "Rack Mount Chassis", 24: "Sealed-case PC", 25: "Multi-system Chassis",
    26: "Compact PCI", 27: "Advanced TCA", 28: "Blade", 29: "Blade Enclosure", 30: "Tablet",
    31: "Convertible", 32: "Detachable", 33: "IoT Gateway", 34: "Embedded PC", 35: "Mini PC", 36: "Stick PC",
}


def chassis_name(code: str) -> str:
    """``"3"`` → ``"Desktop"``; an unknown number is kept as it is, an empty one stays empty."""
    try:
        return _CHASSIS_TYPES.get(int(code), code)
    except ValueError:
        return code
