import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeviceClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_CLASS_UNSPECIFIED: _ClassVar[DeviceClass]
    DEVICE_CLASS_STORAGE: _ClassVar[DeviceClass]
    DEVICE_CLASS_PRINTER: _ClassVar[DeviceClass]
    DEVICE_CLASS_HID: _ClassVar[DeviceClass]
    DEVICE_CLASS_VIDEO: _ClassVar[DeviceClass]
    DEVICE_CLASS_AUDIO: _ClassVar[DeviceClass]
    DEVICE_CLASS_SMART_CARD: _ClassVar[DeviceClass]
    DEVICE_CLASS_COMMUNICATIONS: _ClassVar[DeviceClass]
    DEVICE_CLASS_WIRELESS: _ClassVar[DeviceClass]
    DEVICE_CLASS_HUB: _ClassVar[DeviceClass]
    DEVICE_CLASS_IMAGE: _ClassVar[DeviceClass]
    DEVICE_CLASS_VENDOR_SPECIFIC: _ClassVar[DeviceClass]
    DEVICE_CLASS_OTHER: _ClassVar[DeviceClass]

class SoftwareSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOFTWARE_SOURCE_UNSPECIFIED: _ClassVar[SoftwareSource]
    SOFTWARE_SOURCE_DPKG: _ClassVar[SoftwareSource]
    SOFTWARE_SOURCE_DESKTOP_ENTRY: _ClassVar[SoftwareSource]
    SOFTWARE_SOURCE_FLATPAK: _ClassVar[SoftwareSource]
    SOFTWARE_SOURCE_SNAP: _ClassVar[SoftwareSource]
    SOFTWARE_SOURCE_WINDOWS_REGISTRY: _ClassVar[SoftwareSource]
DEVICE_CLASS_UNSPECIFIED: DeviceClass
DEVICE_CLASS_STORAGE: DeviceClass
DEVICE_CLASS_PRINTER: DeviceClass
DEVICE_CLASS_HID: DeviceClass
DEVICE_CLASS_VIDEO: DeviceClass
DEVICE_CLASS_AUDIO: DeviceClass
DEVICE_CLASS_SMART_CARD: DeviceClass
DEVICE_CLASS_COMMUNICATIONS: DeviceClass
DEVICE_CLASS_WIRELESS: DeviceClass
DEVICE_CLASS_HUB: DeviceClass
DEVICE_CLASS_IMAGE: DeviceClass
DEVICE_CLASS_VENDOR_SPECIFIC: DeviceClass
DEVICE_CLASS_OTHER: DeviceClass
SOFTWARE_SOURCE_UNSPECIFIED: SoftwareSource
SOFTWARE_SOURCE_DPKG: SoftwareSource
SOFTWARE_SOURCE_DESKTOP_ENTRY: SoftwareSource
SOFTWARE_SOURCE_FLATPAK: SoftwareSource
SOFTWARE_SOURCE_SNAP: SoftwareSource
SOFTWARE_SOURCE_WINDOWS_REGISTRY: SoftwareSource

class Fact(_message.Message):
    __slots__ = ("sequence", "observed_at", "inventory", "software_snapshot", "software_delta", "process_snapshot", "process_started", "process_stopped", "session_snapshot", "session", "power", "outbox_notice", "foreground", "activity", "removable_storage", "antivirus", "agent_health")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_AT_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_DELTA_FIELD_NUMBER: _ClassVar[int]
    PROCESS_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PROCESS_STARTED_FIELD_NUMBER: _ClassVar[int]
    PROCESS_STOPPED_FIELD_NUMBER: _ClassVar[int]
    SESSION_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_NOTICE_FIELD_NUMBER: _ClassVar[int]
    FOREGROUND_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    REMOVABLE_STORAGE_FIELD_NUMBER: _ClassVar[int]
    ANTIVIRUS_FIELD_NUMBER: _ClassVar[int]
    AGENT_HEALTH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    observed_at: _timestamp_pb2.Timestamp
    inventory: InventorySnapshot
    software_snapshot: SoftwareSnapshot
    software_delta: SoftwareDelta
    process_snapshot: ProcessSnapshot
    process_started: ProcessStarted
    process_stopped: ProcessStopped
    session_snapshot: SessionSnapshot
    session: SessionEvent
    power: PowerEvent
    outbox_notice: OutboxNotice
    foreground: ForegroundWindow
    activity: InputActivity
    removable_storage: RemovableStorage
    antivirus: AntivirusStatus
    agent_health: AgentHealth
    def __init__(self, sequence: _Optional[int] = ..., observed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., inventory: _Optional[_Union[InventorySnapshot, _Mapping]] = ..., software_snapshot: _Optional[_Union[SoftwareSnapshot, _Mapping]] = ..., software_delta: _Optional[_Union[SoftwareDelta, _Mapping]] = ..., process_snapshot: _Optional[_Union[ProcessSnapshot, _Mapping]] = ..., process_started: _Optional[_Union[ProcessStarted, _Mapping]] = ..., process_stopped: _Optional[_Union[ProcessStopped, _Mapping]] = ..., session_snapshot: _Optional[_Union[SessionSnapshot, _Mapping]] = ..., session: _Optional[_Union[SessionEvent, _Mapping]] = ..., power: _Optional[_Union[PowerEvent, _Mapping]] = ..., outbox_notice: _Optional[_Union[OutboxNotice, _Mapping]] = ..., foreground: _Optional[_Union[ForegroundWindow, _Mapping]] = ..., activity: _Optional[_Union[InputActivity, _Mapping]] = ..., removable_storage: _Optional[_Union[RemovableStorage, _Mapping]] = ..., antivirus: _Optional[_Union[AntivirusStatus, _Mapping]] = ..., agent_health: _Optional[_Union[AgentHealth, _Mapping]] = ...) -> None: ...

class InventorySnapshot(_message.Message):
    __slots__ = ("hostname", "system", "cpu", "memory", "disks", "network_interfaces", "default_gateway", "os", "usb_devices", "printers", "pci_devices", "filesystems", "local_users", "local_groups")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_INTERFACES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    USB_DEVICES_FIELD_NUMBER: _ClassVar[int]
    PRINTERS_FIELD_NUMBER: _ClassVar[int]
    PCI_DEVICES_FIELD_NUMBER: _ClassVar[int]
    FILESYSTEMS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_USERS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    system: SystemInfo
    cpu: CpuInfo
    memory: MemoryInfo
    disks: _containers.RepeatedCompositeFieldContainer[Disk]
    network_interfaces: _containers.RepeatedCompositeFieldContainer[NetworkInterface]
    default_gateway: str
    os: OsInfo
    usb_devices: _containers.RepeatedCompositeFieldContainer[UsbDevice]
    printers: _containers.RepeatedCompositeFieldContainer[Printer]
    pci_devices: _containers.RepeatedCompositeFieldContainer[PciDevice]
    filesystems: _containers.RepeatedCompositeFieldContainer[Filesystem]
    local_users: _containers.RepeatedCompositeFieldContainer[LocalUser]
    local_groups: _containers.RepeatedCompositeFieldContainer[LocalGroup]
    def __init__(self, hostname: _Optional[str] = ..., system: _Optional[_Union[SystemInfo, _Mapping]] = ..., cpu: _Optional[_Union[CpuInfo, _Mapping]] = ..., memory: _Optional[_Union[MemoryInfo, _Mapping]] = ..., disks: _Optional[_Iterable[_Union[Disk, _Mapping]]] = ..., network_interfaces: _Optional[_Iterable[_Union[NetworkInterface, _Mapping]]] = ..., default_gateway: _Optional[str] = ..., os: _Optional[_Union[OsInfo, _Mapping]] = ..., usb_devices: _Optional[_Iterable[_Union[UsbDevice, _Mapping]]] = ..., printers: _Optional[_Iterable[_Union[Printer, _Mapping]]] = ..., pci_devices: _Optional[_Iterable[_Union[PciDevice, _Mapping]]] = ..., filesystems: _Optional[_Iterable[_Union[Filesystem, _Mapping]]] = ..., local_users: _Optional[_Iterable[_Union[LocalUser, _Mapping]]] = ..., local_groups: _Optional[_Iterable[_Union[LocalGroup, _Mapping]]] = ...) -> None: ...

class SystemInfo(_message.Message):
    __slots__ = ("vendor", "model", "serial", "uuid", "bios_vendor", "bios_version", "bios_date", "board_vendor", "board_model", "board_serial", "chassis_type")
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    BIOS_VENDOR_FIELD_NUMBER: _ClassVar[int]
    BIOS_VERSION_FIELD_NUMBER: _ClassVar[int]
    BIOS_DATE_FIELD_NUMBER: _ClassVar[int]
    BOARD_VENDOR_FIELD_NUMBER: _ClassVar[int]
    BOARD_MODEL_FIELD_NUMBER: _ClassVar[int]
    BOARD_SERIAL_FIELD_NUMBER: _ClassVar[int]
    CHASSIS_TYPE_FIELD_NUMBER: _ClassVar[int]
    vendor: str
    model: str
    serial: str
    uuid: str
    bios_vendor: str
    bios_version: str
    bios_date: str
    board_vendor: str
    board_model: str
    board_serial: str
    chassis_type: str
    def __init__(self, vendor: _Optional[str] = ..., model: _Optional[str] = ..., serial: _Optional[str] = ..., uuid: _Optional[str] = ..., bios_vendor: _Optional[str] = ..., bios_version: _Optional[str] = ..., bios_date: _Optional[str] = ..., board_vendor: _Optional[str] = ..., board_model: _Optional[str] = ..., board_serial: _Optional[str] = ..., chassis_type: _Optional[str] = ...) -> None: ...

class CpuInfo(_message.Message):
    __slots__ = ("model", "vendor", "architecture", "physical_cores", "logical_cores", "max_mhz")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    PHYSICAL_CORES_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_CORES_FIELD_NUMBER: _ClassVar[int]
    MAX_MHZ_FIELD_NUMBER: _ClassVar[int]
    model: str
    vendor: str
    architecture: str
    physical_cores: int
    logical_cores: int
    max_mhz: float
    def __init__(self, model: _Optional[str] = ..., vendor: _Optional[str] = ..., architecture: _Optional[str] = ..., physical_cores: _Optional[int] = ..., logical_cores: _Optional[int] = ..., max_mhz: _Optional[float] = ...) -> None: ...

class MemoryInfo(_message.Message):
    __slots__ = ("total_bytes", "swap_bytes")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SWAP_BYTES_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    swap_bytes: int
    def __init__(self, total_bytes: _Optional[int] = ..., swap_bytes: _Optional[int] = ...) -> None: ...

class Disk(_message.Message):
    __slots__ = ("name", "vendor", "model", "serial", "size_bytes", "removable", "rotational")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REMOVABLE_FIELD_NUMBER: _ClassVar[int]
    ROTATIONAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    vendor: str
    model: str
    serial: str
    size_bytes: int
    removable: bool
    rotational: bool
    def __init__(self, name: _Optional[str] = ..., vendor: _Optional[str] = ..., model: _Optional[str] = ..., serial: _Optional[str] = ..., size_bytes: _Optional[int] = ..., removable: _Optional[bool] = ..., rotational: _Optional[bool] = ...) -> None: ...

class NetworkInterface(_message.Message):
    __slots__ = ("name", "mac", "addresses", "up", "speed_mbps", "virtual")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    SPEED_MBPS_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    mac: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    up: bool
    speed_mbps: int
    virtual: bool
    def __init__(self, name: _Optional[str] = ..., mac: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., up: _Optional[bool] = ..., speed_mbps: _Optional[int] = ..., virtual: _Optional[bool] = ...) -> None: ...

class OsInfo(_message.Message):
    __slots__ = ("family", "name", "version", "id", "kernel", "architecture", "machine_id", "install_date")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTALL_DATE_FIELD_NUMBER: _ClassVar[int]
    family: str
    name: str
    version: str
    id: str
    kernel: str
    architecture: str
    machine_id: str
    install_date: _timestamp_pb2.Timestamp
    def __init__(self, family: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., id: _Optional[str] = ..., kernel: _Optional[str] = ..., architecture: _Optional[str] = ..., machine_id: _Optional[str] = ..., install_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UsbDevice(_message.Message):
    __slots__ = ("bus_id", "vendor_id", "product_id", "vendor", "product", "serial", "device_class", "interface_classes")
    BUS_ID_FIELD_NUMBER: _ClassVar[int]
    VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    INTERFACE_CLASSES_FIELD_NUMBER: _ClassVar[int]
    bus_id: str
    vendor_id: str
    product_id: str
    vendor: str
    product: str
    serial: str
    device_class: DeviceClass
    interface_classes: _containers.RepeatedScalarFieldContainer[DeviceClass]
    def __init__(self, bus_id: _Optional[str] = ..., vendor_id: _Optional[str] = ..., product_id: _Optional[str] = ..., vendor: _Optional[str] = ..., product: _Optional[str] = ..., serial: _Optional[str] = ..., device_class: _Optional[_Union[DeviceClass, str]] = ..., interface_classes: _Optional[_Iterable[_Union[DeviceClass, str]]] = ...) -> None: ...

class Printer(_message.Message):
    __slots__ = ("name", "uri", "make_model", "location", "info", "is_default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    MAKE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    make_model: str
    location: str
    info: str
    is_default: bool
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., make_model: _Optional[str] = ..., location: _Optional[str] = ..., info: _Optional[str] = ..., is_default: _Optional[bool] = ...) -> None: ...

class PciDevice(_message.Message):
    __slots__ = ("slot", "class_code", "vendor_id", "device_id", "subsystem_vendor_id", "subsystem_device_id", "vendor", "device", "driver")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    CLASS_CODE_FIELD_NUMBER: _ClassVar[int]
    VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSYSTEM_VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSYSTEM_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    slot: str
    class_code: str
    vendor_id: str
    device_id: str
    subsystem_vendor_id: str
    subsystem_device_id: str
    vendor: str
    device: str
    driver: str
    def __init__(self, slot: _Optional[str] = ..., class_code: _Optional[str] = ..., vendor_id: _Optional[str] = ..., device_id: _Optional[str] = ..., subsystem_vendor_id: _Optional[str] = ..., subsystem_device_id: _Optional[str] = ..., vendor: _Optional[str] = ..., device: _Optional[str] = ..., driver: _Optional[str] = ...) -> None: ...

class Filesystem(_message.Message):
    __slots__ = ("device", "mount_point", "fs_type", "total_bytes", "free_bytes")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MOUNT_POINT_FIELD_NUMBER: _ClassVar[int]
    FS_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    device: str
    mount_point: str
    fs_type: str
    total_bytes: int
    free_bytes: int
    def __init__(self, device: _Optional[str] = ..., mount_point: _Optional[str] = ..., fs_type: _Optional[str] = ..., total_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ...) -> None: ...

class LocalUser(_message.Message):
    __slots__ = ("name", "uid", "full_name", "home", "shell")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    HOME_FIELD_NUMBER: _ClassVar[int]
    SHELL_FIELD_NUMBER: _ClassVar[int]
    name: str
    uid: int
    full_name: str
    home: str
    shell: str
    def __init__(self, name: _Optional[str] = ..., uid: _Optional[int] = ..., full_name: _Optional[str] = ..., home: _Optional[str] = ..., shell: _Optional[str] = ...) -> None: ...

class LocalGroup(_message.Message):
    __slots__ = ("name", "gid", "members")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    gid: int
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., gid: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class SoftwareItem(_message.Message):
    __slots__ = ("source", "name", "version", "display_name", "publisher", "install_date", "section", "categories", "executable", "architecture", "install_location")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    INSTALL_DATE_FIELD_NUMBER: _ClassVar[int]
    SECTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    INSTALL_LOCATION_FIELD_NUMBER: _ClassVar[int]
    source: SoftwareSource
    name: str
    version: str
    display_name: str
    publisher: str
    install_date: _timestamp_pb2.Timestamp
    section: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    executable: str
    architecture: str
    install_location: str
    def __init__(self, source: _Optional[_Union[SoftwareSource, str]] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., display_name: _Optional[str] = ..., publisher: _Optional[str] = ..., install_date: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., section: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., executable: _Optional[str] = ..., architecture: _Optional[str] = ..., install_location: _Optional[str] = ...) -> None: ...

class SoftwareSnapshot(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SoftwareItem]
    def __init__(self, items: _Optional[_Iterable[_Union[SoftwareItem, _Mapping]]] = ...) -> None: ...

class SoftwareDelta(_message.Message):
    __slots__ = ("added", "removed", "changed")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    added: _containers.RepeatedCompositeFieldContainer[SoftwareItem]
    removed: _containers.RepeatedCompositeFieldContainer[SoftwareItem]
    changed: _containers.RepeatedCompositeFieldContainer[SoftwareItem]
    def __init__(self, added: _Optional[_Iterable[_Union[SoftwareItem, _Mapping]]] = ..., removed: _Optional[_Iterable[_Union[SoftwareItem, _Mapping]]] = ..., changed: _Optional[_Iterable[_Union[SoftwareItem, _Mapping]]] = ...) -> None: ...

class ProcessInfo(_message.Message):
    __slots__ = ("pid", "ppid", "name", "executable", "username", "started_at")
    PID_FIELD_NUMBER: _ClassVar[int]
    PPID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    pid: int
    ppid: int
    name: str
    executable: str
    username: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, pid: _Optional[int] = ..., ppid: _Optional[int] = ..., name: _Optional[str] = ..., executable: _Optional[str] = ..., username: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProcessSnapshot(_message.Message):
    __slots__ = ("processes",)
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    processes: _containers.RepeatedCompositeFieldContainer[ProcessInfo]
    def __init__(self, processes: _Optional[_Iterable[_Union[ProcessInfo, _Mapping]]] = ...) -> None: ...

class ProcessStarted(_message.Message):
    __slots__ = ("process",)
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    process: ProcessInfo
    def __init__(self, process: _Optional[_Union[ProcessInfo, _Mapping]] = ...) -> None: ...

class ProcessStopped(_message.Message):
    __slots__ = ("pid", "name", "started_at")
    PID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    pid: int
    name: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, pid: _Optional[int] = ..., name: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UserSession(_message.Message):
    __slots__ = ("username", "terminal", "host", "started_at")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    username: str
    terminal: str
    host: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, username: _Optional[str] = ..., terminal: _Optional[str] = ..., host: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SessionSnapshot(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[UserSession]
    def __init__(self, sessions: _Optional[_Iterable[_Union[UserSession, _Mapping]]] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("kind", "session")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[SessionEvent.Kind]
        KIND_LOGIN: _ClassVar[SessionEvent.Kind]
        KIND_LOGOUT: _ClassVar[SessionEvent.Kind]
    KIND_UNSPECIFIED: SessionEvent.Kind
    KIND_LOGIN: SessionEvent.Kind
    KIND_LOGOUT: SessionEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    kind: SessionEvent.Kind
    session: UserSession
    def __init__(self, kind: _Optional[_Union[SessionEvent.Kind, str]] = ..., session: _Optional[_Union[UserSession, _Mapping]] = ...) -> None: ...

class PowerEvent(_message.Message):
    __slots__ = ("kind", "boot_time")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[PowerEvent.Kind]
        KIND_BOOT: _ClassVar[PowerEvent.Kind]
        KIND_SHUTDOWN: _ClassVar[PowerEvent.Kind]
        KIND_HEARTBEAT: _ClassVar[PowerEvent.Kind]
        KIND_SUSPEND: _ClassVar[PowerEvent.Kind]
        KIND_RESUME: _ClassVar[PowerEvent.Kind]
    KIND_UNSPECIFIED: PowerEvent.Kind
    KIND_BOOT: PowerEvent.Kind
    KIND_SHUTDOWN: PowerEvent.Kind
    KIND_HEARTBEAT: PowerEvent.Kind
    KIND_SUSPEND: PowerEvent.Kind
    KIND_RESUME: PowerEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    BOOT_TIME_FIELD_NUMBER: _ClassVar[int]
    kind: PowerEvent.Kind
    boot_time: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[_Union[PowerEvent.Kind, str]] = ..., boot_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ForegroundWindow(_message.Message):
    __slots__ = ("category", "pattern_id", "executable", "pid", "username", "title")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    PATTERN_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    category: str
    pattern_id: str
    executable: str
    pid: int
    username: str
    title: str
    def __init__(self, category: _Optional[str] = ..., pattern_id: _Optional[str] = ..., executable: _Optional[str] = ..., pid: _Optional[int] = ..., username: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class InputActivity(_message.Message):
    __slots__ = ("state", "username", "session", "idle_seconds", "source")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[InputActivity.State]
        STATE_ACTIVE: _ClassVar[InputActivity.State]
        STATE_IDLE: _ClassVar[InputActivity.State]
    STATE_UNSPECIFIED: InputActivity.State
    STATE_ACTIVE: InputActivity.State
    STATE_IDLE: InputActivity.State
    STATE_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    IDLE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    state: InputActivity.State
    username: str
    session: str
    idle_seconds: int
    source: str
    def __init__(self, state: _Optional[_Union[InputActivity.State, str]] = ..., username: _Optional[str] = ..., session: _Optional[str] = ..., idle_seconds: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class RemovableStorage(_message.Message):
    __slots__ = ("action", "device", "bus_id", "vendor_id", "product_id", "vendor", "product", "serial", "size_bytes", "mount_point", "fs_type")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[RemovableStorage.Action]
        ACTION_ATTACHED: _ClassVar[RemovableStorage.Action]
        ACTION_MOUNTED: _ClassVar[RemovableStorage.Action]
        ACTION_UNMOUNTED: _ClassVar[RemovableStorage.Action]
        ACTION_REMOVED: _ClassVar[RemovableStorage.Action]
    ACTION_UNSPECIFIED: RemovableStorage.Action
    ACTION_ATTACHED: RemovableStorage.Action
    ACTION_MOUNTED: RemovableStorage.Action
    ACTION_UNMOUNTED: RemovableStorage.Action
    ACTION_REMOVED: RemovableStorage.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    BUS_ID_FIELD_NUMBER: _ClassVar[int]
    VENDOR_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MOUNT_POINT_FIELD_NUMBER: _ClassVar[int]
    FS_TYPE_FIELD_NUMBER: _ClassVar[int]
    action: RemovableStorage.Action
    device: str
    bus_id: str
    vendor_id: str
    product_id: str
    vendor: str
    product: str
    serial: str
    size_bytes: int
    mount_point: str
    fs_type: str
    def __init__(self, action: _Optional[_Union[RemovableStorage.Action, str]] = ..., device: _Optional[str] = ..., bus_id: _Optional[str] = ..., vendor_id: _Optional[str] = ..., product_id: _Optional[str] = ..., vendor: _Optional[str] = ..., product: _Optional[str] = ..., serial: _Optional[str] = ..., size_bytes: _Optional[int] = ..., mount_point: _Optional[str] = ..., fs_type: _Optional[str] = ...) -> None: ...

class AntivirusStatus(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[AntivirusProduct]
    def __init__(self, products: _Optional[_Iterable[_Union[AntivirusProduct, _Mapping]]] = ...) -> None: ...

class AntivirusProduct(_message.Message):
    __slots__ = ("name", "installed", "running", "version", "last_scan")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SCAN_FIELD_NUMBER: _ClassVar[int]
    name: str
    installed: bool
    running: bool
    version: str
    last_scan: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., installed: _Optional[bool] = ..., running: _Optional[bool] = ..., version: _Optional[str] = ..., last_scan: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AgentHealth(_message.Message):
    __slots__ = ("action", "cpu_percent", "rss_bytes", "shed", "reason", "cpu_limit_percent", "rss_limit_bytes")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[AgentHealth.Action]
        ACTION_SHED: _ClassVar[AgentHealth.Action]
        ACTION_RESTORED: _ClassVar[AgentHealth.Action]
        ACTION_RESTART: _ClassVar[AgentHealth.Action]
    ACTION_UNSPECIFIED: AgentHealth.Action
    ACTION_SHED: AgentHealth.Action
    ACTION_RESTORED: AgentHealth.Action
    ACTION_RESTART: AgentHealth.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CPU_LIMIT_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    action: AgentHealth.Action
    cpu_percent: float
    rss_bytes: int
    shed: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    cpu_limit_percent: float
    rss_limit_bytes: int
    def __init__(self, action: _Optional[_Union[AgentHealth.Action, str]] = ..., cpu_percent: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., shed: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., cpu_limit_percent: _Optional[float] = ..., rss_limit_bytes: _Optional[int] = ...) -> None: ...

class OutboxNotice(_message.Message):
    __slots__ = ("set_aside", "dropped", "reason")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SET_ASIDE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    set_aside: int
    dropped: _containers.ScalarMap[str, int]
    reason: str
    def __init__(self, set_aside: _Optional[int] = ..., dropped: _Optional[_Mapping[str, int]] = ..., reason: _Optional[str] = ...) -> None: ...
