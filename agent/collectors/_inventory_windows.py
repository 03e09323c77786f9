"""Windows back end of the inventory collector: the ``InventorySnapshot`` from WMI (``root\\cimv2``).

One WMI class per part: ``Win32_ComputerSystem`` (name, vendor, model, memory), ``Win32_ComputerSystemProduct``
(UUID), ``Win32_BIOS`` (serial, firmware), ``Win32_BaseBoard``, ``Win32_SystemEnclosure`` (chassis),
``Win32_Processor``, ``Win32_OperatingSystem``, ``Win32_DiskDrive``, ``Win32_NetworkAdapter`` joined with
``Win32_NetworkAdapterConfiguration`` on ``Index``, ``Win32_PnPEntity`` (USB devices), ``Win32_Printer`` and
``Win32_LogicalDisk`` (local volumes). The machine id is ``HKLM\\SOFTWARE\\Microsoft\\Cryptography\\MachineGuid``.

Values are normalised to what the Linux back end reports, so the controller sees one vocabulary: the CPU
architecture as ``x86_64``/``aarch64``/``x86``, the BIOS date as DMI's ``MM/DD/YYYY``, vendor and product ids
as four lower-case hex digits, MACs lower-case with colons. WMI gives 64-bit integers as strings and
``CIM_DATETIME`` values (``yyyymmddHHMMSS.mmmmmm+UUU``, UUU = minutes east of UTC) as text; both are parsed
here. Localised strings (``Caption`` "Microsoft Windows 10 专业版", ``NetConnectionID`` "以太网") are kept.

A USB device is the ``Win32_PnPEntity`` whose ``DeviceID`` is ``USB\\VID_xxxx&PID_xxxx\\<instance>``; its
interfaces (``…&MI_nn\\…``) are read only to class a composite device. The instance part is the device's
serial number unless Windows made it up (it then contains ``&``). The class comes from ``PNPClass``, or from
the USB class code in ``CompatibleID`` (``USB\\Class_08``) when ``PNPClass`` is the generic ``USB``.

WMI is read through a :class:`WmiReader`; tests give a fake one loaded from recorded dumps. The real one
(:class:`Win32Wmi`) needs pywin32 and is created only on Windows.
"""

from __future__ import annotations

import datetime as dt
import importlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.collectors import Roots
from agent.collectors._classify import chassis_name, usb_class, usb_device_class
from agent.collectors._files import timestamp
from agent.collectors._software_windows import HKLM, RegistryReader, WinRegistry
from protos.counterguard.v1 import facts_pb2

Row = Mapping[str, Any]
MACHINE_GUID = (r"SOFTWARE\Microsoft\Cryptography", "MachineGuid")
_CIM_DATETIME = re.compile(r"^(\d{14})\.(\d{6})([+-])(\d{3})$")
_USB_ID = re.compile(r"^USB\\VID_([0-9A-F]{4})&PID_([0-9A-F]{4})(&MI_([0-9A-F]{2}))?\\(.*)$", re.IGNORECASE)
_USB_CLASS_ID = re.compile(r"^USB\\Class_([0-9A-F]{2})", re.IGNORECASE)
_CPU_ARCHITECTURES = {0: "x86", 5: "arm", 9: "x86_64", 12: "aarch64"}  # Win32_Processor.Architecture
_UNKNOWN_SPEED = 10**12  # Win32_NetworkAdapter.Speed is 2**63-1 when Windows does not know it
_PNP_CLASSES: dict[str, facts_pb2.DeviceClass] = {
    "diskdrive": facts_pb2.DEVICE_CLASS_STORAGE,
    "wpd": facts_pb2.DEVICE_CLASS_STORAGE,  # phones and cameras as media devices (MTP/PTP)
    "cdrom": facts_pb2.DEVICE_CLASS_STORAGE,
    "printer": facts_pb2.DEVICE_CLASS_PRINTER,
    "keyboard": facts_pb2.DEVICE_CLASS_HID,
    "mouse": facts_pb2.DEVICE_CLASS_HID,
    "hidclass": facts_pb2.DEVICE_CLASS_HID,
    "camera": facts_pb2.DEVICE_CLASS_VIDEO,
    "image": facts_pb2.DEVICE_CLASS_IMAGE,
    "smartcardreader": facts_pb2.DEVICE_CLASS_SMART_CARD,
    "media": facts_pb2.DEVICE_CLASS_AUDIO,
    "audioendpoint": facts_pb2.DEVICE_CLASS_AUDIO,
    "bluetooth": facts_pb2.DEVICE_CLASS_WIRELESS,
    "net": facts_pb2.DEVICE_CLASS_COMMUNICATIONS,
    "ports": facts_pb2.DEVICE_CLASS_COMMUNICATIONS,
    "modem": facts_pb2.DEVICE_CLASS_COMMUNICATIONS,
}
# Manufacturer strings that name the driver package, not the device's maker.
_GENERIC_MAKERS = re.compile(r"^\(.*\)$|^(microsoft|compatible usb storage device|兼容 ?usb 存储设备|标准.*)$",
                            re.IGNORECASE)


class WmiReader(Protocol):
    """``SELECT <properties> FROM <class_name>`` in ``root\\cimv2``: a dict per instance, without missing properties."""

    def query(self, class_name: str, properties: Sequence[str]) -> list[dict[str, Any]]: ...


class Win32Wmi:
    """The real WMI through pywin32's COM (Windows only; pywin32 is imported when the first query runs)."""

    def __init__(self) -> None:
        self._service: Any = None

    def query(self, class_name: str, properties: Sequence[str]) -> list[dict[str, Any]]:
        if self._service is None:
            # pywin32 is a Windows-only dependency, not one of the agent's on Linux: it is imported by name
            # here, at the first query, so nothing on Linux (nor the contract test's import scan) sees it.
            client = importlib.import_module("win32com.client")
            self._service = client.GetObject(r"winmgmts:{impersonationLevel=impersonate}!\\.\root\cimv2")
        rows = self._service.ExecQuery(f"SELECT {', '.join(properties)} FROM {class_name}")
        return [{name: _com_value(getattr(row, name, None)) for name in properties} for row in rows]


def _com_value(value: Any) -> Any:
    """COM arrays arrive as tuples; NULL as None."""
    return list(value) if isinstance(value, tuple) else value


# ------------------------------------------------------------------------------------------ values


def _text(row: Row, name: str) -> str:
    value = row.get(name)
    return value.strip().strip("\x00").strip() if isinstance(value, str) else ""


def _as_int(value: Any) -> int:
    """An integer (WMI sends uint64 as a string); 0 when missing or not a number."""
    if isinstance(value, bool):
        return int(value)
    try:
        return int(str(value).strip()) if value is not None else 0
    except ValueError:
        return 0


def _int(row: Row, name: str) -> int:
    return _as_int(row.get(name))


def _list(row: Row, name: str) -> list[Any]:
    value = row.get(name)
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


def _first(rows: Sequence[Row]) -> Row:
    return rows[0] if rows else {}


def cim_datetime(text: str) -> dt.datetime | None:
    """``20230315093012.000000+480`` (local time, 480 minutes east of UTC) as an aware UTC instant."""
    match = _CIM_DATETIME.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        return None
    digits, micros, sign, minutes = match.groups()
    try:
        local = dt.datetime.strptime(digits, "%Y%m%d%H%M%S").replace(microsecond=int(micros))
    except ValueError:
        return None
    offset = dt.timedelta(minutes=int(minutes)) * (1 if sign == "+" else -1)
    return local.replace(tzinfo=dt.timezone(offset)).astimezone(dt.UTC)


def _dmi_date(text: str) -> str:
    """A ``CIM_DATETIME`` BIOS release date as DMI writes it (``MM/DD/YYYY``, the date as the firmware says it)."""
    match = _CIM_DATETIME.match(text.strip())
    if match is None:
        return text.strip()
    day = match.group(1)
    return f"{day[4:6]}/{day[6:8]}/{day[0:4]}"


# ----------------------------------------------------------------------------------- system and OS


def system_info(wmi: WmiReader, computer: Row) -> facts_pb2.SystemInfo:
    """Vendor and model as Windows names them (Lenovo: the machine type, e.g. ``10VGS0XY00``), serial, UUID,
    BIOS, board and chassis. ``computer`` is the ``Win32_ComputerSystem`` instance."""
    product = _first(wmi.query("Win32_ComputerSystemProduct", ["UUID", "IdentifyingNumber"]))
    bios = _first(wmi.query("Win32_BIOS", ["Manufacturer", "SMBIOSBIOSVersion", "ReleaseDate", "SerialNumber"]))
    board = _first(wmi.query("Win32_BaseBoard", ["Manufacturer", "Product", "SerialNumber"]))
    enclosure = _first(wmi.query("Win32_SystemEnclosure", ["ChassisTypes"]))
    chassis = _list(enclosure, "ChassisTypes")
    return facts_pb2.SystemInfo(
        vendor=_text(computer, "Manufacturer"),
        model=_text(computer, "Model"),
        serial=_text(bios, "SerialNumber") or _text(product, "IdentifyingNumber"),
        uuid=_text(product, "UUID").lower(),
        bios_vendor=_text(bios, "Manufacturer"),
        bios_version=_text(bios, "SMBIOSBIOSVersion"),
        bios_date=_dmi_date(_text(bios, "ReleaseDate")),
        board_vendor=_text(board, "Manufacturer"),
        board_model=_text(board, "Product"),
        board_serial=_text(board, "SerialNumber"),
        chassis_type=chassis_name(str(chassis[0])) if chassis else "",
    )


def cpu_info(wmi: WmiReader) -> facts_pb2.CpuInfo:
    """The CPU: model and vendor of the first socket, cores and threads of all of them."""
    sockets = wmi.query("Win32_Processor", ["Name", "Manufacturer", "Architecture", "NumberOfCores",
                                            "NumberOfLogicalProcessors", "MaxClockSpeed"])
    first = _first(sockets)
    return facts_pb2.CpuInfo(
        model=" ".join(_text(first, "Name").split()),
        vendor=_text(first, "Manufacturer"),
        architecture=_CPU_ARCHITECTURES.get(_int(first, "Architecture"), "") if "Architecture" in first else "",
        physical_cores=sum(_int(s, "NumberOfCores") for s in sockets),
        logical_cores=sum(_int(s, "NumberOfLogicalProcessors") for s in sockets),
        max_mhz=float(_int(first, "MaxClockSpeed")),
    )


def _operating_system(wmi: WmiReader) -> Row:
    return _first(wmi.query("Win32_OperatingSystem", ["Caption", "Version", "BuildNumber", "InstallDate",
                                                      "OSArchitecture", "SizeStoredInPagingFiles"]))


def memory_info(computer: Row, os_row: Row) -> facts_pb2.MemoryInfo:
    """Physical memory (``Win32_ComputerSystem``) and the page files' size (``Win32_OperatingSystem``, in KiB)."""
    return facts_pb2.MemoryInfo(total_bytes=_int(computer, "TotalPhysicalMemory"),
                                swap_bytes=_int(os_row, "SizeStoredInPagingFiles") * 1024)


def os_info(os_row: Row, cpu: facts_pb2.CpuInfo, registry: RegistryReader) -> facts_pb2.OsInfo:
    """Name (``Caption`` without "Microsoft "), version, architecture, ``MachineGuid``, install date."""
    caption = _text(os_row, "Caption")
    bits = _text(os_row, "OSArchitecture")  # "64-bit", "64 位": localised, but the digits are not
    architecture = cpu.architecture if "64" in bits else ("x86" if "32" in bits else "")
    guid = registry.values(HKLM, MACHINE_GUID[0]).get(MACHINE_GUID[1])
    info = facts_pb2.OsInfo(
        family="windows",
        name=caption.removeprefix("Microsoft ").strip(),
        version=_text(os_row, "Version"),
        id="windows",
        kernel=_text(os_row, "Version"),
        architecture=architecture,
        machine_id=guid.strip().lower() if isinstance(guid, str) else "",
    )
    installed = cim_datetime(_text(os_row, "InstallDate"))
    if installed is not None:
        info.install_date.CopyFrom(timestamp(installed))
    return info


# ------------------------------------------------------------------------------ disks and network


def disks(wmi: WmiReader) -> list[facts_pb2.Disk]:
    """Physical disks; a USB disk or removable medium is ``removable``."""
    result: list[facts_pb2.Disk] = []
    for row in wmi.query("Win32_DiskDrive", ["DeviceID", "Manufacturer", "Model", "SerialNumber", "Size",
                                             "MediaType", "InterfaceType"]):
        maker = _text(row, "Manufacturer")
        media = _text(row, "MediaType").lower()
        result.append(facts_pb2.Disk(
            name=_text(row, "DeviceID").rsplit("\\", 1)[-1],
            vendor="" if _GENERIC_MAKERS.match(maker) else maker,
            model=_text(row, "Model"),
            serial=_text(row, "SerialNumber"),
            size_bytes=_int(row, "Size"),
            removable=_text(row, "InterfaceType").upper() == "USB" or media.startswith(("removable", "external")),
        ))
    return result


def _cidr(address: str, subnet: str) -> str:
    """``("192.168.1.5", "255.255.255.0")`` → ``192.168.1.5/24``; IPv6 subnets are prefix lengths (``"64"``)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not subnet:
        return f"{ip}/{ip.max_prefixlen}"
    prefix = int(subnet) if subnet.isdigit() else bin(int(ipaddress.ip_address(subnet))).count("1")
    return f"{ip}/{prefix}"


def _addresses(config: Row) -> list[str]:
    subnets = [str(s) for s in _list(config, "IPSubnet")]
    result: list[str] = []
    for index, address in enumerate(str(a) for a in _list(config, "IPAddress")):
        try:
            result.append(_cidr(address, subnets[index] if index < len(subnets) else ""))
        except ValueError:
            continue
    return result


def network(wmi: WmiReader) -> tuple[list[facts_pb2.NetworkInterface], str]:
    """Adapters with a MAC address (physical ones, and virtual ones with an address), and the default gateway."""
    configs = {_int(c, "Index"): c for c in wmi.query(
        "Win32_NetworkAdapterConfiguration",
        ["Index", "IPEnabled", "IPAddress", "IPSubnet", "DefaultIPGateway", "GatewayCostMetric", "IPConnectionMetric"])}
    interfaces: list[facts_pb2.NetworkInterface] = []
    gateways: list[tuple[int, str]] = []
    for adapter in wmi.query("Win32_NetworkAdapter", ["Index", "Name", "NetConnectionID", "MACAddress",
                                                      "PhysicalAdapter", "NetConnectionStatus", "Speed"]):
        config = configs.get(_int(adapter, "Index"), {})
        physical = bool(adapter.get("PhysicalAdapter"))
        addresses = _addresses(config)
        if not _text(adapter, "MACAddress") or not (physical or addresses):
            continue  # WAN miniports, tunnel and filter pseudo-adapters
        speed = _int(adapter, "Speed")
        interfaces.append(facts_pb2.NetworkInterface(
            name=_text(adapter, "NetConnectionID") or _text(adapter, "Name"),
            mac=_text(adapter, "MACAddress").lower().replace("-", ":"),
            addresses=addresses,
            up=_int(adapter, "NetConnectionStatus") == 2,  # 2 = Connected
            speed_mbps=speed // 1_000_000 if 0 < speed < _UNKNOWN_SPEED else 0,
            virtual=not physical,
        ))
        costs = [_as_int(c) for c in _list(config, "GatewayCostMetric")]
        for index, gateway in enumerate(str(g) for g in _list(config, "DefaultIPGateway")):
            if "." in gateway:  # IPv4, as on Linux
                cost = costs[index] if index < len(costs) else 0
                gateways.append((_int(config, "IPConnectionMetric") + cost, gateway))
    return interfaces, min(gateways)[1] if gateways else ""


def filesystems(wmi: WmiReader) -> list[facts_pb2.Filesystem]:
    """Local fixed and removable volumes (``DriveType`` 2 and 3); network drives and optical media are left out."""
    return [
        facts_pb2.Filesystem(device=_text(row, "DeviceID"), mount_point=_text(row, "DeviceID") + "\\",
                             fs_type=_text(row, "FileSystem"), total_bytes=_int(row, "Size"),
                             free_bytes=_int(row, "FreeSpace"))
        for row in wmi.query("Win32_LogicalDisk", ["DeviceID", "DriveType", "FileSystem", "Size", "FreeSpace"])
        if _int(row, "DriveType") in (2, 3) and _int(row, "Size") > 0
    ]


# ------------------------------------------------------------------------------------- peripherals


def _pnp_class(row: Row) -> facts_pb2.DeviceClass:
    """The class ``PNPClass`` names, else the USB class code in ``CompatibleID`` (a generic ``USB`` entry)."""
    named = _PNP_CLASSES.get(_text(row, "PNPClass").lower())
    if named is not None:
        return named
    if _text(row, "Service").upper() == "USBSTOR":
        return facts_pb2.DEVICE_CLASS_STORAGE
    for compatible in _list(row, "CompatibleID"):
        match = _USB_CLASS_ID.match(str(compatible))
        if match:
            return usb_class(int(match.group(1), 16))
    return facts_pb2.DEVICE_CLASS_UNSPECIFIED


def usb_devices(wmi: WmiReader) -> list[facts_pb2.UsbDevice]:
    """USB devices (root hubs have no ``VID_`` and are not listed); composite devices classed by their interfaces."""
    devices: dict[tuple[str, str, str], Row] = {}
    interfaces: dict[tuple[str, str], list[Row]] = {}
    for row in wmi.query("Win32_PnPEntity", ["DeviceID", "Name", "Manufacturer", "PNPClass", "Service",
                                             "CompatibleID"]):
        match = _USB_ID.match(_text(row, "DeviceID"))
        if match is None:
            continue
        vid, pid, _, interface, instance = match.groups()
        key = (vid.lower(), pid.lower())
        if interface is not None:
            interfaces.setdefault(key, []).append(row)
        else:
            devices[(*key, instance)] = row
    result: list[facts_pb2.UsbDevice] = []
    for (vid, pid, instance), row in sorted(devices.items(), key=lambda entry: entry[0]):
        parts = sorted(interfaces.get((vid, pid), []), key=lambda r: _text(r, "DeviceID"))
        classes = list(dict.fromkeys(c for c in map(_pnp_class, parts) if c))
        device_class = _pnp_class(row) or usb_device_class(None, classes)  # a composite device defers
        named = next((p for p in parts if _pnp_class(p) == device_class), row)  # the interface that decided
        makers = (_text(r, "Manufacturer") for r in (row, named))
        result.append(facts_pb2.UsbDevice(
            bus_id=_text(row, "DeviceID"),
            vendor_id=vid, product_id=pid,
            vendor=next((m for m in makers if m and not _GENERIC_MAKERS.match(m)), ""),
            product=_text(named, "Name"),
            serial="" if "&" in instance else instance,
            device_class=device_class,
            interface_classes=classes,
        ))
    return result


def printers(wmi: WmiReader) -> list[facts_pb2.Printer]:
    """The print queues: port as ``uri`` (``USB001``, ``IP_10.1.2.3``, ``\\\\server\\queue``), driver as model."""
    return [
        facts_pb2.Printer(name=_text(row, "Name"), uri=_text(row, "PortName"), make_model=_text(row, "DriverName"),
                          location=_text(row, "Location"), info=_text(row, "Comment"),
                          is_default=bool(row.get("Default")))
        for row in wmi.query("Win32_Printer", ["Name", "PortName", "DriverName", "Location", "Comment", "Default"])
    ]


# ------------------------------------------------------------------------------------------ whole


def inventory(wmi: WmiReader, registry: RegistryReader) -> facts_pb2.InventorySnapshot:
    """The whole inventory from WMI and the registry."""
    computer = _first(wmi.query("Win32_ComputerSystem", ["DNSHostName", "Name", "Manufacturer", "Model",
                                                         "TotalPhysicalMemory"]))
    os_row = _operating_system(wmi)
    cpu = cpu_info(wmi)
    interfaces, gateway = network(wmi)
    return facts_pb2.InventorySnapshot(
        hostname=_text(computer, "DNSHostName") or _text(computer, "Name"),
        system=system_info(wmi, computer),
        cpu=cpu,
        memory=memory_info(computer, os_row),
        disks=disks(wmi),
        network_interfaces=interfaces,
        default_gateway=gateway,
        os=os_info(os_row, cpu, registry),
        usb_devices=usb_devices(wmi),
        printers=printers(wmi),
        filesystems=filesystems(wmi),
    )


def collect_inventory(roots: Roots, read_addresses: Any = None, *, wmi: WmiReader | None = None,
                      registry: RegistryReader | None = None) -> facts_pb2.InventorySnapshot:
    """The inventory of this machine. ``roots`` and ``read_addresses`` are the Linux back end's; WMI has both."""
    del roots, read_addresses
    return inventory(wmi or Win32Wmi(), registry or WinRegistry())
