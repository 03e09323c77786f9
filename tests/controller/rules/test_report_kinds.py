"""Which rule kinds a live report makes the controller judge again (:func:`kinds_to_evaluate`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from controller.convert import datetime_to_timestamp
from controller.policy.catalogue import CatalogueMatcher
from controller.policy.loader import load_policy_file
from controller.policy.model import RuleKind
from controller.rules.loading import kinds_to_evaluate
from protos.counterguard.v1 import facts_pb2 as pb

POLICY = load_policy_file(Path(__file__).resolve().parents[3] / "policies" / "default.yaml")
MATCHER = CatalogueMatcher(POLICY.catalogue)
FORBIDDEN = {c.value for r in POLICY.rules if r.kind is RuleKind.FORBIDDEN_PROGRAM for c in r.categories}
NOW = dt.datetime(2026, 11, 2, 3, 0, tzinfo=dt.UTC)


def fact(sequence: int, at: dt.datetime = NOW, **kind: object) -> pb.Fact:
    return pb.Fact(sequence=sequence, observed_at=datetime_to_timestamp(at), **kind)  # type: ignore[arg-type]


def heartbeat(sequence: int, at: dt.datetime = NOW) -> pb.Fact:
    return fact(sequence, at, power=pb.PowerEvent(kind=pb.PowerEvent.KIND_HEARTBEAT))


def started(sequence: int, name: str) -> pb.Fact:
    return fact(sequence, process_started=pb.ProcessStarted(process=pb.ProcessInfo(pid=sequence, name=name)))


def kinds(*facts: pb.Fact, previous: dt.datetime = NOW - dt.timedelta(minutes=1),
          in_use: bool = False) -> set[RuleKind]:
    return kinds_to_evaluate(facts, FORBIDDEN, MATCHER, now=NOW, previous_contact=previous, program_in_use=in_use)


def test_a_heartbeat_only_shows_the_machine_is_still_on_and_its_user_still_active() -> None:
    assert kinds(heartbeat(1)) == {RuleKind.POWERED_ON_AFTER_HOURS, RuleKind.ACTIVITY_OUTSIDE_HOURS}


def test_office_programs_do_not_make_programs_judged_again_but_a_game_does() -> None:
    office = kinds(heartbeat(1), started(2, "soffice.bin"), fact(3, process_stopped=pb.ProcessStopped(
        pid=9, name="evince")))
    assert RuleKind.FORBIDDEN_PROGRAM not in office
    assert RuleKind.FORBIDDEN_PROGRAM in kinds(heartbeat(1), started(2, "gnome-mines"))
    assert RuleKind.FORBIDDEN_PROGRAM in kinds(fact(1, process_stopped=pb.ProcessStopped(pid=9, name="gnome-mines")))
    assert RuleKind.FORBIDDEN_PROGRAM in kinds(fact(1, foreground=pb.ForegroundWindow(category="game")))


def test_a_program_still_in_use_keeps_being_judged_and_a_process_list_always_is() -> None:
    assert RuleKind.FORBIDDEN_PROGRAM in kinds(heartbeat(1), started(2, "soffice.bin"), in_use=True)
    assert RuleKind.FORBIDDEN_PROGRAM in kinds(fact(1, process_snapshot=pb.ProcessSnapshot()))
    assert RuleKind.FORBIDDEN_PROGRAM in kinds(fact(1, power=pb.PowerEvent(kind=pb.PowerEvent.KIND_BOOT)))


def test_silence_is_judged_after_a_gap_or_late_facts_only() -> None:
    assert RuleKind.AGENT_SILENT not in kinds(heartbeat(1))
    assert RuleKind.AGENT_SILENT in kinds(heartbeat(1), previous=NOW - dt.timedelta(minutes=45))
    assert RuleKind.AGENT_SILENT in kinds(heartbeat(1, NOW - dt.timedelta(hours=3)), heartbeat(2))


def test_other_facts_reach_the_kinds_that_read_them() -> None:
    assert kinds(fact(1, software_delta=pb.SoftwareDelta())) == {RuleKind.UNAPPROVED_SOFTWARE}
    assert kinds(fact(1, activity=pb.InputActivity(state=pb.InputActivity.STATE_ACTIVE))) == {
        RuleKind.ACTIVITY_OUTSIDE_HOURS}
    assert {RuleKind.HARDWARE_CHANGED, RuleKind.OS_REINSTALLED, RuleKind.NETWORK_CHANGED} <= kinds(
        fact(1, inventory=pb.InventorySnapshot()))
