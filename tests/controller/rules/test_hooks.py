"""Where the rules engine is hooked in: after Report stores facts, the sweep thread, and serve's test clock."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.errors import CounterGuardError
from controller.grpc_server import AgentServicer, BuiltinPolicy
from controller.rules.sweep import Sweeper
from controller.server import FAKE_NOW_VARIABLE, _clock_for_tests
from protos.counterguard.v1 import agent_pb2, facts_pb2


def _certificate(agent_id: str) -> bytes:
    """A certificate naming ``agent_id`` (the servicer reads the name; the ingest checks it is the agent's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM)


CERTIFICATE = _certificate("ag-1")


class Context:
    """The servicer context of a caller with a verified client certificate."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [CERTIFICATE]}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted {code}: {details}")


@dataclass
class Ingested:
    acknowledged_sequence: int
    stored: int
    conflicts: list[int] = field(default_factory=list)


@dataclass
class Rules:
    fail: bool = False
    calls: list[tuple[str, list[int]]] = field(default_factory=list)

    def on_ingest(self, agent_id: str, facts: Sequence[facts_pb2.Fact]) -> None:
        self.calls.append((agent_id, [f.sequence for f in facts]))
        if self.fail:
            raise RuntimeError("the rules engine broke")


def servicer(rules: Rules, stored: int) -> AgentServicer:
    ingest = SimpleNamespace(ingest=lambda agent_id, facts, presented, outbox_depth=None: Ingested(max(f.sequence for f in facts), stored))
    return AgentServicer(enrollment=None, directory=None, ingest=ingest,  # type: ignore[arg-type]
                         policies=BuiltinPolicy(), report_port=1, rules=rules)


def report(*sequences: int) -> agent_pb2.ReportRequest:
    return agent_pb2.ReportRequest(facts=[
        facts_pb2.Fact(sequence=s, observed_at={"seconds": 1_800_000_000},
                       power=facts_pb2.PowerEvent(kind=facts_pb2.PowerEvent.KIND_HEARTBEAT))
        for s in sequences
    ])


def test_report_hands_the_stored_facts_to_the_rules() -> None:
    rules = Rules()

    answer = servicer(rules, stored=2).Report(report(1, 2), Context())  # type: ignore[arg-type]

    assert answer.acknowledged_sequence == 2
    assert rules.calls == [("ag-1", [1, 2])]


def test_a_batch_already_held_is_not_evaluated_again() -> None:
    rules = Rules()

    servicer(rules, stored=0).Report(report(1, 2), Context())  # type: ignore[arg-type]

    assert rules.calls == []


def test_a_failing_evaluation_never_fails_the_report(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="controller.grpc_server"):
        answer = servicer(Rules(fail=True), stored=1).Report(report(7), Context())  # type: ignore[arg-type]

    assert answer.acknowledged_sequence == 7
    assert "evaluating the rules after a report of agent ag-1 failed" in caplog.text


class Sweeps:
    def __init__(self, fail_first: bool = False) -> None:
        self.count = 0
        self.fail_first = fail_first
        self.twice = threading.Event()

    def sweep(self) -> None:
        self.count += 1
        if self.count >= 2:
            self.twice.set()
        if self.fail_first and self.count == 1:
            raise RuntimeError("database down")


def test_the_sweeper_sweeps_at_start_and_then_every_interval_and_survives_a_failure() -> None:
    sweeps = Sweeps(fail_first=True)
    sweeper = Sweeper(sweeps, interval=0.05)

    sweeper.start()
    assert sweeps.twice.wait(5)
    sweeper.stop()

    stopped_at = sweeps.count
    threading.Event().wait(0.2)
    assert sweeps.count == stopped_at
    with pytest.raises(ValueError, match="above 0"):
        Sweeper(sweeps, interval=0)


def test_the_test_clock_hook_is_used_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    real = lambda: dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # noqa: E731
    monkeypatch.delenv(FAKE_NOW_VARIABLE, raising=False)
    assert _clock_for_tests(real) is real

    monkeypatch.setenv(FAKE_NOW_VARIABLE, "2026-11-02T10:00:00+08:00")
    now = _clock_for_tests(real)()
    assert dt.timedelta(0) <= now - dt.datetime(2026, 11, 2, 2, tzinfo=dt.UTC) < dt.timedelta(seconds=5)

    monkeypatch.setenv(FAKE_NOW_VARIABLE, "2026-11-02 10:00")
    with pytest.raises(CounterGuardError, match="is not an ISO time with an offset"):
        _clock_for_tests(real)
