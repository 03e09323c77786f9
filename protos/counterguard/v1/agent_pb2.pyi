import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from protos.counterguard.v1 import facts_pb2 as _facts_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem", "hostname", "machine_id", "os_family", "agent_version")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    MACHINE_ID_FIELD_NUMBER: _ClassVar[int]
    OS_FAMILY_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: bytes
    hostname: str
    machine_id: str
    os_family: str
    agent_version: str
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ..., hostname: _Optional[str] = ..., machine_id: _Optional[str] = ..., os_family: _Optional[str] = ..., agent_version: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("agent_id", "certificate_pem", "ca_certificate_pem", "report_host", "report_port", "window")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    REPORT_HOST_FIELD_NUMBER: _ClassVar[int]
    REPORT_PORT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    certificate_pem: bytes
    ca_certificate_pem: bytes
    report_host: str
    report_port: int
    window: str
    def __init__(self, agent_id: _Optional[str] = ..., certificate_pem: _Optional[bytes] = ..., ca_certificate_pem: _Optional[bytes] = ..., report_host: _Optional[str] = ..., report_port: _Optional[int] = ..., window: _Optional[str] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("facts", "agent_version", "outbox_depth")
    FACTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.RepeatedCompositeFieldContainer[_facts_pb2.Fact]
    agent_version: str
    outbox_depth: int
    def __init__(self, facts: _Optional[_Iterable[_Union[_facts_pb2.Fact, _Mapping]]] = ..., agent_version: _Optional[str] = ..., outbox_depth: _Optional[int] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("kind",)
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Command.Kind]
        KIND_SEND_FULL_INVENTORY: _ClassVar[Command.Kind]
        KIND_SEND_FULL_SOFTWARE: _ClassVar[Command.Kind]
    KIND_UNSPECIFIED: Command.Kind
    KIND_SEND_FULL_INVENTORY: Command.Kind
    KIND_SEND_FULL_SOFTWARE: Command.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    kind: Command.Kind
    def __init__(self, kind: _Optional[_Union[Command.Kind, str]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("acknowledged_sequence", "policy_version", "commands", "conflicting_sequences", "notices")
    ACKNOWLEDGED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    CONFLICTING_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    acknowledged_sequence: int
    policy_version: str
    commands: _containers.RepeatedCompositeFieldContainer[Command]
    conflicting_sequences: _containers.RepeatedScalarFieldContainer[int]
    notices: _containers.RepeatedCompositeFieldContainer[Notice]
    def __init__(self, acknowledged_sequence: _Optional[int] = ..., policy_version: _Optional[str] = ..., commands: _Optional[_Iterable[_Union[Command, _Mapping]]] = ..., conflicting_sequences: _Optional[_Iterable[int]] = ..., notices: _Optional[_Iterable[_Union[Notice, _Mapping]]] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("violation_key", "rule_id", "title", "body", "occurred_at")
    VIOLATION_KEY_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    violation_key: str
    rule_id: str
    title: str
    body: str
    occurred_at: _timestamp_pb2.Timestamp
    def __init__(self, violation_key: _Optional[str] = ..., rule_id: _Optional[str] = ..., title: _Optional[str] = ..., body: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FetchPolicyRequest(_message.Message):
    __slots__ = ("current_version",)
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    current_version: str
    def __init__(self, current_version: _Optional[str] = ...) -> None: ...

class AgentPolicy(_message.Message):
    __slots__ = ("report_interval_seconds", "heartbeat_interval_seconds", "process_poll_interval_seconds", "session_poll_interval_seconds", "software_scan_interval_seconds", "inventory_interval_seconds", "idle_threshold_seconds", "activity_poll_interval_seconds", "foreground_enabled", "foreground_poll_interval_seconds", "report_titles", "title_patterns", "antivirus", "antivirus_check_interval_seconds", "removable_mount_roots", "notices_enabled")
    REPORT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROCESS_POLL_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_POLL_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_SCAN_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    IDLE_THRESHOLD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_POLL_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FOREGROUND_ENABLED_FIELD_NUMBER: _ClassVar[int]
    FOREGROUND_POLL_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPORT_TITLES_FIELD_NUMBER: _ClassVar[int]
    TITLE_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    ANTIVIRUS_FIELD_NUMBER: _ClassVar[int]
    ANTIVIRUS_CHECK_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REMOVABLE_MOUNT_ROOTS_FIELD_NUMBER: _ClassVar[int]
    NOTICES_ENABLED_FIELD_NUMBER: _ClassVar[int]
    report_interval_seconds: int
    heartbeat_interval_seconds: int
    process_poll_interval_seconds: int
    session_poll_interval_seconds: int
    software_scan_interval_seconds: int
    inventory_interval_seconds: int
    idle_threshold_seconds: int
    activity_poll_interval_seconds: int
    foreground_enabled: bool
    foreground_poll_interval_seconds: int
    report_titles: bool
    title_patterns: _containers.RepeatedCompositeFieldContainer[TitlePattern]
    antivirus: _containers.RepeatedCompositeFieldContainer[AntivirusProbe]
    antivirus_check_interval_seconds: int
    removable_mount_roots: _containers.RepeatedScalarFieldContainer[str]
    notices_enabled: bool
    def __init__(self, report_interval_seconds: _Optional[int] = ..., heartbeat_interval_seconds: _Optional[int] = ..., process_poll_interval_seconds: _Optional[int] = ..., session_poll_interval_seconds: _Optional[int] = ..., software_scan_interval_seconds: _Optional[int] = ..., inventory_interval_seconds: _Optional[int] = ..., idle_threshold_seconds: _Optional[int] = ..., activity_poll_interval_seconds: _Optional[int] = ..., foreground_enabled: _Optional[bool] = ..., foreground_poll_interval_seconds: _Optional[int] = ..., report_titles: _Optional[bool] = ..., title_patterns: _Optional[_Iterable[_Union[TitlePattern, _Mapping]]] = ..., antivirus: _Optional[_Iterable[_Union[AntivirusProbe, _Mapping]]] = ..., antivirus_check_interval_seconds: _Optional[int] = ..., removable_mount_roots: _Optional[_Iterable[str]] = ..., notices_enabled: _Optional[bool] = ...) -> None: ...

class TitlePattern(_message.Message):
    __slots__ = ("id", "category", "title_contains", "executables")
    ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TITLE_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    category: str
    title_contains: _containers.RepeatedScalarFieldContainer[str]
    executables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., category: _Optional[str] = ..., title_contains: _Optional[_Iterable[str]] = ..., executables: _Optional[_Iterable[str]] = ...) -> None: ...

class AntivirusProbe(_message.Message):
    __slots__ = ("name", "process_names", "packages", "paths")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROCESS_NAMES_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    name: str
    process_names: _containers.RepeatedScalarFieldContainer[str]
    packages: _containers.RepeatedScalarFieldContainer[str]
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., process_names: _Optional[_Iterable[str]] = ..., packages: _Optional[_Iterable[str]] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...

class FetchPolicyResponse(_message.Message):
    __slots__ = ("version", "changed", "policy")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    version: str
    changed: bool
    policy: AgentPolicy
    def __init__(self, version: _Optional[str] = ..., changed: _Optional[bool] = ..., policy: _Optional[_Union[AgentPolicy, _Mapping]] = ...) -> None: ...
