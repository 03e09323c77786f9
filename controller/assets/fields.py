"""The fields of an asset as people type them (CLI options, CSV cells): checked and normalised.

Each check raises :class:`FieldError` (or :class:`FieldConflict`: taken), which names the field (the
CSV column, or the CLI option without its dashes) and the reason; the CLI prints it as it is, the
CSV import prefixes file and row. Which identity a kind may have: a PC its workstation (``agent``) or its system ``serial``; a
printer a print queue (``printer``, ``printer_uri``) or a USB device; scanners, card readers,
signature pads, evaluators and ``other`` a USB device; phones, desks and chairs none.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from controller.assets.records import KINDS
from controller.errors import Conflict, InvalidInput

_HEX4 = re.compile(r"^[0-9a-fA-F]{4}$")
_SLASHED_DATE = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$")
# The kinds as a centre's own register names them.
KIND_NAMES = {"电脑": "pc", "主机": "pc", "计算机": "pc", "打印机": "printer", "扫描仪": "scanner", "读卡器": "card_reader",
              "身份证阅读器": "card_reader", "签名板": "signature_pad", "手写板": "signature_pad", "评价器": "evaluator",
              "电话": "phone", "桌子": "desk", "办公桌": "desk", "椅子": "chair", "其他": "other"}
_USB_KINDS = frozenset({"printer", "scanner", "card_reader", "signature_pad", "evaluator", "other"})
# What white-box firmware puts where a serial should be: never an identity.
PLACEHOLDER_SERIALS = frozenset({
    "", "0", "none", "n/a", "na", "default string", "to be filled by o.e.m.", "system serial number",
    "chassis serial number", "not specified", "not applicable", "invalid", "123456789", "0123456789",
    "01234567890", "1234567890", "0000000000", "00000000",
})


class _FieldProblem(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class FieldError(_FieldProblem, InvalidInput):
    """One field's value is wrong: ``field`` is what the person typed it into, ``reason`` says why."""


class FieldConflict(_FieldProblem, Conflict):
    """One field's value is taken: the tag or the identity belongs to another asset."""


FieldProblem = (FieldError, FieldConflict)


def tag(value: str) -> str:
    text = value.strip()
    if not text:
        raise FieldError("tag", "an asset tag is required")
    if len(text) > 64:
        raise FieldError("tag", f"{text[:20]!r}… is longer than 64 characters")
    if any(c.isspace() or not c.isprintable() for c in text):
        raise FieldError("tag", f"{text!r} contains spaces or control characters")
    return text


def kind(value: str) -> str:
    """One of :data:`~controller.assets.records.KINDS`, or its Chinese name (:data:`KIND_NAMES`)."""
    text = value.strip().lower().replace("-", "_")
    text = KIND_NAMES.get(text, text)
    if text not in KINDS:
        raise FieldError("kind", f"{value.strip()!r} is not one of {', '.join(KINDS)}")
    return text


def text(field: str, value: str | None, limit: int, *, required: bool = False) -> str:
    cleaned = (value or "").strip()
    if required and not cleaned:
        raise FieldError(field, "a value is required")
    if len(cleaned) > limit:
        raise FieldError(field, f"is longer than {limit} characters")
    return cleaned


def code(field: str, value: str | None) -> str | None:
    """A window or unit code; ``None`` when empty."""
    return text(field, value, 64) or None


def usb(value: str) -> tuple[str, str, str]:
    """``VID:PID`` or ``VID:PID:SERIAL`` → lower-case ids and the serial (which may itself contain colons)."""
    parts = value.strip().split(":", 2)
    if len(parts) < 2 or not (_HEX4.match(parts[0]) and _HEX4.match(parts[1])):
        raise FieldError("usb", f"{value.strip()!r} is not VID:PID or VID:PID:SERIAL (four hex digits each)")
    serial = parts[2].strip() if len(parts) == 3 else ""
    if len(serial) > 128:
        raise FieldError("usb", "the serial is longer than 128 characters")
    return parts[0].lower(), parts[1].lower(), serial


def day(field: str, value: str) -> dt.date:
    """``2026-11-02`` or ``2026/11/2`` (as spreadsheets write dates)."""
    cleaned = value.strip()
    try:
        slashed = _SLASHED_DATE.match(cleaned)
        if slashed:
            return dt.date(*(int(g) for g in slashed.groups()))
        return dt.date.fromisoformat(cleaned)
    except ValueError:
        raise FieldError(field, f"{cleaned!r} is not a date (2026-11-02)") from None


def system_serial(value: str | None) -> str:
    """A PC's system serial, or empty when it is one of the placeholders firmware writes."""
    cleaned = (value or "").strip()[:128]
    return "" if cleaned.lower() in PLACEHOLDER_SERIALS else cleaned


def identity(kind_: str, *, agent: str | None = None, serial: str | None = None, usb_ids: str | None = None,
             printer: str | None = None, printer_uri: str | None = None) -> dict[str, Any]:
    """The identity columns of an asset of ``kind_`` from what was given; refuses what that kind cannot have."""
    values: dict[str, Any] = {"agent_id": None, "vendor_id": "", "product_id": "", "serial": "", "printer_name": "",
                              "printer_uri": ""}
    agent, serial, usb_ids = (agent or "").strip(), (serial or "").strip(), (usb_ids or "").strip()
    printer, printer_uri = text("printer", printer, 255), text("printer_uri", printer_uri, 1000)
    if (agent or serial) and kind_ != "pc":
        raise FieldError("agent" if agent else "serial", f"only a PC (kind pc) has a workstation, not a {kind_}")
    if usb_ids and kind_ not in _USB_KINDS:
        raise FieldError("usb", f"a {kind_} is not a USB device")
    if (printer or printer_uri) and kind_ != "printer":
        raise FieldError("printer" if printer else "printer_uri", f"only a printer has a print queue, not a {kind_}")
    if kind_ == "pc":
        if serial and not system_serial(serial):
            raise FieldError("serial", f"{serial!r} is a placeholder, not a serial number")
        values.update(agent_id=agent or None, serial=system_serial(serial))
    if usb_ids:
        vendor_id, product_id, usb_serial = usb(usb_ids)
        values.update(vendor_id=vendor_id, product_id=product_id, serial=usb_serial)
    values.update(printer_name=printer, printer_uri=printer_uri)
    return values


def describe_identity(row: Any) -> str:
    """How an asset is recognised, for people: ``agent ag-1 (serial X)``, ``USB 096e:0201:S``, ``printer P``."""
    parts = []
    if row.agent_id:
        parts.append(f"agent {row.agent_id}")
    if row.kind == "pc" and row.serial:
        parts.append(f"serial {row.serial}")
    if row.vendor_id:
        parts.append(f"USB {row.vendor_id}:{row.product_id}" + (f":{row.serial}" if row.serial else ""))
    if row.printer_name or row.printer_uri:
        parts.append("printer " + " ".join(p for p in (row.printer_name, f"({row.printer_uri})" if row.printer_uri
                                                        else "") if p))
    return ", ".join(parts)
