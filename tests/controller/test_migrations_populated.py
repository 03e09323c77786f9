"""Schema migrations of a populated database: from the first schema to the current one, revision by revision.

The database starts at the first revision and is filled as a controller of that time would have
filled it: an enrolment token, an agent with a certificate from our CA, and its facts with real
protobuf payloads (inventory, software, power, a session, a game started). Then it is upgraded one
revision at a time, in the order Alembic lists them; after each step every row inserted so far must
still be there with the same values, and each table the step created gets rows of its own
(realistic ones for the tables the rules read, generic values of each column's type for the others,
so revisions written later are covered without touching this test). At the head, the current code
reads what the first schema stored: the inventory, the software and processes, the certificate, the
token (which still enrols), the policy; it ingests a new batch and evaluates the rules over it.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import Connection, Engine

from controller import state
from controller.agents import AgentDirectory
from controller.config import Settings
from controller.convert import datetime_to_timestamp, fact_to_row
from controller.db import make_engine
from controller.enrollment import EnrollmentService
from controller.ingest import IngestService
from controller.migrate import alembic_config, current_revision, head_revision, upgrade
from controller.pki import ServerPKI, cert_pem, fingerprint, load_or_create_pki, serial_hex, sign_csr
from controller.policy.store import PolicyStore, content_sha256
from controller.rules.service import RulesService
from controller.rules.violations import ViolationService
from controller.tokens import TokenService, hash_secret
from policies import DEFAULT_POLICY
from protos.counterguard.v1 import facts_pb2 as pb
from tests.conftest import FakeClock

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
MONDAY = dt.datetime(2026, 11, 2, 10, 0, tzinfo=SHANGHAI).astimezone(dt.UTC)  # in working time
AGENT_ID = "ag-0123456789"
TOKEN_ID, TOKEN_SECRET = "a1b2c3d4e5f6", "kept-from-the-first-schema"
GAME_PID = 4242


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


# ------------------------------------------------------------------------------------ what the first schema held


def agent_certificate(pki: ServerPKI) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "counter-pc")]))
           .sign(key, hashes.SHA256()))
    return sign_csr(pki.ca_key, pki.ca_cert, csr.public_bytes(serialization.Encoding.PEM), AGENT_ID,
                    MONDAY - dt.timedelta(days=30), 365)


def new_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "counter-pc-2")]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def inventory() -> pb.InventorySnapshot:
    return pb.InventorySnapshot(
        hostname="counter-w01",
        system=pb.SystemInfo(vendor="Lenovo", model="ThinkCentre M720", serial="PC123", board_serial="MB456"),
        cpu=pb.CpuInfo(model="Intel Core i5-8500"),
        memory=pb.MemoryInfo(total_bytes=16 * 2**30),
        disks=[pb.Disk(name="sda", model="Samsung SSD 860", serial="S3Z1", size_bytes=500_000_000_000)],
        network_interfaces=[pb.NetworkInterface(name="eno1", mac="aa:bb:cc:dd:ee:01", addresses=["10.0.0.5/24"],
                                                up=True)],
        default_gateway="10.0.0.1",
        os=pb.OsInfo(family="linux", name="UOS", version="20", machine_id="m-0001"),
    )


def first_facts() -> list[pb.Fact]:
    """What an agent reported on its first morning: a boot, inventory, software, a login, a game, heartbeats."""
    boot = MONDAY - dt.timedelta(minutes=50)
    game = pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DESKTOP_ENTRY, name="org.gnome.Mines.desktop",
                           display_name="扫雷", categories=["Game", "LogicGame"], executable="gnome-mines")
    kinds: list[tuple[dt.datetime, dict[str, Any]]] = [
        (boot, {"power": pb.PowerEvent(kind=pb.PowerEvent.KIND_BOOT, boot_time=datetime_to_timestamp(boot))}),
        (boot, {"inventory": inventory()}),
        (boot, {"software_snapshot": pb.SoftwareSnapshot(items=[
            pb.SoftwareItem(source=pb.SOFTWARE_SOURCE_DPKG, name="coreutils", version="9.1", section="utils"),
            game])}),
        (boot, {"session": pb.SessionEvent(kind=pb.SessionEvent.KIND_LOGIN, session=pb.UserSession(
            username="zhang", terminal=":0", started_at=datetime_to_timestamp(boot)))}),
        (MONDAY, {"process_started": pb.ProcessStarted(process=pb.ProcessInfo(
            pid=GAME_PID, name="gnome-mines", executable="/usr/games/gnome-mines", username="zhang",
            started_at=datetime_to_timestamp(MONDAY)))}),
    ]
    kinds += [(boot + dt.timedelta(minutes=m), {"power": pb.PowerEvent(
        kind=pb.PowerEvent.KIND_HEARTBEAT, boot_time=datetime_to_timestamp(boot))}) for m in range(0, 51, 5)]
    kinds.sort(key=lambda item: item[0])
    return [pb.Fact(sequence=n, observed_at=datetime_to_timestamp(at), **kind)
            for n, (at, kind) in enumerate(kinds, start=1)]


class Builders:
    """Realistic rows for the tables the current code reads back below, as full dicts of their columns."""

    def __init__(self, pki: ServerPKI) -> None:
        self.certificate = agent_certificate(pki)
        self.facts = first_facts()

    def rows(self, table: str) -> list[dict[str, Any]] | None:
        build: Callable[[], list[dict[str, Any]]] | None = getattr(self, table, None)
        return build() if build is not None else None

    def enrollment_token(self) -> list[dict[str, Any]]:
        base = {"window": "W01", "unit": "市场监管局", "created_at": MONDAY - dt.timedelta(days=31),
                "created_by": "admin", "revoked_at": None, "note": "大厅一楼"}
        return [
            {**base, "id": TOKEN_ID, "secret_hash": hash_secret(TOKEN_SECRET), "max_uses": 5, "uses": 1,
             "expires_at": MONDAY + dt.timedelta(days=300)},
            {**base, "id": "0f0f0f0f0f0f", "secret_hash": hash_secret("revoked"), "max_uses": 1, "uses": 0,
             "expires_at": MONDAY + dt.timedelta(days=300), "revoked_at": MONDAY - dt.timedelta(days=3)},
        ]

    def agent(self) -> list[dict[str, Any]]:
        return [{
            "id": AGENT_ID, "hostname": "counter-w01", "machine_id": "m-0001", "os_family": "linux",
            "agent_version": "0.1.0", "window": "W01", "unit": "市场监管局", "token_id": TOKEN_ID,
            "enrolled_at": MONDAY - dt.timedelta(days=30), "cert_serial": serial_hex(self.certificate),
            "cert_fingerprint": fingerprint(self.certificate), "cert_not_after": self.certificate.not_valid_after_utc,
            "revoked_at": None, "revoked_reason": "", "last_seen_at": MONDAY + dt.timedelta(minutes=1),
            "last_sequence": len(self.facts),
        }]

    def fact(self) -> list[dict[str, Any]]:
        return [fact_to_row(AGENT_ID, fact, MONDAY + dt.timedelta(minutes=1)) for fact in self.facts]

    def policy_version(self) -> list[dict[str, Any]]:
        text = DEFAULT_POLICY.read_text(encoding="utf-8")
        document = yaml.safe_load(text)
        return [{"policy_id": document["id"], "version": document["version"], "sha256": content_sha256(text),
                 "content": text, "source": "default.yaml", "applied_by": "counterguard serve",
                 "applied_at": MONDAY - dt.timedelta(days=30)}]

    def violation(self) -> list[dict[str, Any]]:
        last_week = MONDAY - dt.timedelta(days=7)
        return [{
            "key": "7" * 64, "rule_id": "games-video-music", "ref": "R11.6; R9 7(2)14",
            "title": "工作时间用电脑打游戏、看视频、听音乐", "kind": "forbidden_program", "category": "game",
            "policy_id": "counterguard-default", "policy_version": "2026.1", "agent_id": AGENT_ID,
            "subject": "gnome-mines (pid 17)", "accounts": ["zhang"], "period_start": last_week,
            "period_end": last_week + dt.timedelta(minutes=20), "occurred_at": last_week,
            "local_date": last_week.astimezone(SHANGHAI).date(), "evidence": {"fact_ids": [], "summary": "上周"},
            "informational": False, "attribute_to_owner": False, "penalty_points": 5.0, "penalty_money": 0.0,
            "penalty_section": "工作纪律", "status": "confirmed", "status_by": "主任",
            "status_at": last_week + dt.timedelta(days=1), "status_reason": "核实", "created_at": last_week,
            "updated_at": last_week + dt.timedelta(days=1),
        }]

    def software_approval(self) -> list[dict[str, Any]]:
        return [{"name": "wps-office", "source": "dpkg", "unit": None, "window": None, "decision": "approved",
                 "decided_by": "主任", "decided_at": MONDAY - dt.timedelta(days=20), "reason": "办公软件"}]

    def exemption(self) -> list[dict[str, Any]]:
        evening = MONDAY + dt.timedelta(days=3, hours=9)
        return [{"agent_id": AGENT_ID, "window": None, "starts_at": evening, "ends_at": evening + dt.timedelta(hours=2),
                 "reason": "加班", "created_by": "主任", "created_at": MONDAY, "removed_at": None, "removed_by": ""}]

    def registered_device(self) -> list[dict[str, Any]]:
        return [{"vendor_id": "096e", "product_id": "0006", "serial": "", "description": "CA 签名 Key",
                 "unit": "市场监管局", "window": None, "registered_by": "主任", "registered_at": MONDAY}]

    def account_mapping(self) -> list[dict[str, Any]]:
        return [{"account": "zhang", "staff": "S001", "windows": "W01", "valid_from": None, "valid_to": None,
                 "created_by": "主任", "created_at": MONDAY}]

    def maintenance_record(self) -> list[dict[str, Any]]:
        return [{"agent_id": AGENT_ID, "starts_at": MONDAY - dt.timedelta(days=10),
                 "ends_at": MONDAY - dt.timedelta(days=10, hours=-2), "note": "更换硬盘", "recorded_by": "信息科",
                 "recorded_at": MONDAY - dt.timedelta(days=10)}]


# ------------------------------------------------------------------------------------ any other table


def generic_value(column: sa.Column[Any], stored: dict[str, list[dict[str, Any]]]) -> Any:
    """A valid value of ``column``'s type (a foreign key takes the value of a row stored before)."""
    for key in column.foreign_keys:
        rows = stored.get(key.column.table.name)
        return rows[0][key.column.name] if rows else None
    kind = column.type
    if isinstance(kind, sa.Enum):
        return kind.enums[0]
    if isinstance(kind, sa.Boolean):
        return True
    if isinstance(kind, sa.Integer):
        return 1
    if isinstance(kind, sa.Float | sa.Numeric):
        return decimal.Decimal("1.5") if isinstance(kind, sa.Numeric) and kind.asdecimal else 1.5
    if isinstance(kind, sa.DateTime):
        return MONDAY if getattr(kind, "timezone", False) else MONDAY.replace(tzinfo=None)
    if isinstance(kind, sa.Date):
        return MONDAY.date()
    if isinstance(kind, sa.Time):
        return dt.time(9, 0)
    if isinstance(kind, sa.JSON):
        return {"kept": [1, "二"]}
    if isinstance(kind, sa.LargeBinary):
        return b"\x00kept"
    text = f"{column.table.name}.{column.name} 保留"
    length = getattr(kind, "length", None)
    return text[:length] if length else text


def completed(table: sa.Table, row: dict[str, Any], stored: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``row`` limited to the columns the table has at this revision, with any other required column filled."""
    values = {name: value for name, value in row.items() if name in table.c}
    for column in table.c:
        if column.name in values or (column.primary_key and column.autoincrement in (True, "auto")
                                     and isinstance(column.type, sa.Integer)):
            continue
        values[column.name] = generic_value(column, stored)
    return values


def insert_rows(conn: Connection, table: sa.Table, rows: list[dict[str, Any]],
                stored: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Insert ``rows`` one by one; each row as the database gives it back."""
    back = []
    for row in rows:
        result = conn.execute(table.insert().values(completed(table, row, stored)))
        key = dict(zip([c.name for c in table.primary_key.columns], result.inserted_primary_key or ()))
        back.append(dict(conn.execute(sa.select(table).filter_by(**key)).one()._mapping))
    return back


# Tables whose rows are counters that triggers raise (decision_revision: writes to the decision tables).
COUNTERS = frozenset({"decision_revision"})


def assert_kept(conn: Connection, tables: sa.MetaData, stored: dict[str, list[dict[str, Any]]], revision: str) -> None:
    """Every row stored so far is still there, with the same value in every column it still has."""
    for name, rows in stored.items():
        assert name in tables.tables, f"revision {revision} dropped table {name} and its rows"
        table = tables.tables[name]
        for row in rows:
            key = {c.name: row[c.name] for c in table.primary_key.columns}
            now = conn.execute(sa.select(table).filter_by(**key)).one_or_none()
            assert now is not None, f"revision {revision} lost the row {key} of {name}"
            if name in COUNTERS:
                continue  # its value moves with writes elsewhere; that the row is there is what counts
            kept = {column: value for column, value in row.items() if column in table.c}
            assert {column: now._mapping[column] for column in kept} == kept, \
                f"revision {revision} changed {name} {key}"


# ------------------------------------------------------------------------------------ the test


def test_a_populated_database_migrates_from_the_first_schema_and_the_code_reads_it(
        database_url: str, tmp_path: Path) -> None:
    pki = load_or_create_pki(Settings(data_dir=tmp_path / "controller"), MONDAY - dt.timedelta(days=60))
    builders = Builders(pki)
    engine = make_engine(database_url)
    stored: dict[str, list[dict[str, Any]]] = {}
    steps = revisions()
    try:
        assert len(steps) >= 2 and steps[-1] == head_revision()
        for revision in steps:
            upgrade(engine, revision)
            tables = sa.MetaData()
            tables.reflect(engine)
            with engine.begin() as conn:
                assert_kept(conn, tables, stored, revision)
                for table in tables.sorted_tables:
                    if table.name in stored or table.name == "alembic_version":
                        continue
                    seeded = [dict(row._mapping) for row in conn.execute(sa.select(table))]  # by the migration
                    rows = builders.rows(table.name) or [{}]
                    stored[table.name] = seeded or insert_rows(conn, table, rows, stored)
        assert current_revision(engine) == head_revision()
        assert {"enrollment_token", "agent", "fact", "policy_version", "violation"} <= set(stored)

        reads_what_the_first_schema_stored(engine, pki, builders)
    finally:
        engine.dispose()


def reads_what_the_first_schema_stored(engine: Engine, pki: ServerPKI, builders: Builders) -> None:
    clock = FakeClock(MONDAY + dt.timedelta(minutes=30))

    snapshot = state.inventory(engine, AGENT_ID).snapshot
    assert snapshot is not None and (snapshot.hostname, snapshot.disks[0].serial) == ("counter-w01", "S3Z1")
    assert "org.gnome.Mines.desktop" in {s.name for s in state.installed_software(engine, AGENT_ID)}
    assert GAME_PID in {p.pid for p in state.running_processes(engine, AGENT_ID)}
    assert AgentDirectory(engine, clock).authenticate(cert_pem(builders.certificate)).id == AGENT_ID

    held = len(builders.facts)
    boot = builders.facts[0].power.boot_time
    batch = [pb.Fact(sequence=held + 1, observed_at=datetime_to_timestamp(clock()),
                     power=pb.PowerEvent(kind=pb.PowerEvent.KIND_HEARTBEAT, boot_time=boot))]
    result = IngestService(engine, clock).ingest(AGENT_ID, batch)
    assert (result.acknowledged_sequence, result.stored) == (held + 1, 1)

    store = PolicyStore(engine, clock)
    active = store.active()
    assert active is not None and active.record.label.startswith("counterguard-default@")
    evaluation = RulesService(engine, store, clock).evaluate(AGENT_ID, MONDAY - dt.timedelta(hours=2), clock())
    assert evaluation.created >= 1
    games = ViolationService(engine, clock).list(rule="games-video-music", workstation=AGENT_ID)
    assert [v.status for v in games] == ["confirmed", "open"]  # last week's, kept as confirmed; this morning's
    assert f"pid {GAME_PID}" in games[1].subject

    tokens = {t.token_id: t.status for t in TokenService(engine, clock).list(include_expired=True)}
    assert tokens == {TOKEN_ID: "active", "0f0f0f0f0f0f": "revoked"}
    enrolled = EnrollmentService(engine, pki, clock).enroll(f"{TOKEN_ID}.{TOKEN_SECRET}", new_csr(), hostname="w02")
    assert enrolled.window == "W01" and enrolled.agent_id != AGENT_ID
