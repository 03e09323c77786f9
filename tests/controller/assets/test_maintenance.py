"""A PC's maintenance through the register and the rules (R11.7): the real ingest, policy and rules service.

A disk swapped between two inventories is a ``hardware-changed`` violation; ``asset maintain`` covering
that time withdraws it, and recorded before the new inventory arrives, keeps it from being created.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.engine import Engine

from controller.assets.service import AssetService
from controller.policy.store import PolicyStore
from controller.rules.service import RulesService
from controller.rules.violations import ViolationService
from policies import DEFAULT_POLICY
from tests.controller.assets.centre import Reporter, add_agent, add_org, pc
from tests.controller.rules.builders import local


@pytest.fixture
def rules(engine: Engine, clock: Any) -> RulesService:
    store = PolicyStore(engine, clock)
    store.apply(DEFAULT_POLICY.read_text(encoding="utf-8"), "default.yaml", "test")
    add_org(engine, clock)
    for agent, window in (("ag-1", "W01"), ("ag-2", "W02")):
        add_agent(engine, clock, agent, window)
    return RulesService(engine, store, clock)


def _hardware(engine: Engine, agent: str) -> list[tuple[str, str, str]]:
    return [(v.agent_id, v.status, v.subject) for v in ViolationService(engine).list(rule="hardware-changed")
            if v.agent_id == agent]


def test_a_disk_swap_is_a_violation_until_the_asset_maintenance_covers_it(
        engine: Engine, clock: Any, rules: RulesService) -> None:
    reporter = Reporter(engine, clock, rules)
    assets = AssetService(engine, clock, rules=rules)
    assets.register("PC-1", "pc", "W01", agent="ag-1")
    clock.now = local(2026, 11, 2, 9, 0)
    reporter.inventory("ag-1", pc(disk_serial="S1"))
    clock.now = local(2026, 11, 3, 9, 0)
    reporter.inventory("ag-1", pc(disk_serial="S2"))

    [(_, status, subject)] = _hardware(engine, "ag-1")
    assert status == "open" and "S1" in subject and "S2" in subject

    clock.now = local(2026, 11, 3, 10, 0)
    done = assets.maintain("PC-1", local(2026, 11, 2, 15, 0), local(2026, 11, 2, 16, 30), "更换硬盘 王工",
                           by="主控室")

    assert [w["agent_id"] for w in done.maintenance.workstations] == ["ag-1"]
    assert done.evaluation is not None and done.evaluation.withdrawn == 1
    [(_, status, _)] = _hardware(engine, "ag-1")
    assert status == "withdrawn"
    [violation] = ViolationService(engine).list(rule="hardware-changed")
    assert violation.status_reason == "maintenance recorded"


def test_maintenance_recorded_before_the_new_inventory_keeps_the_violation_from_being_created(
        engine: Engine, clock: Any, rules: RulesService) -> None:
    reporter = Reporter(engine, clock, rules)
    assets = AssetService(engine, clock, rules=rules)
    clock.now = local(2026, 11, 2, 9, 0)
    reporter.inventory("ag-2", pc(serial="PC-W02", disk_serial="S1"))
    assets.register("PC-2", "pc", "W02", serial="PC-W02")  # known by its serial: found in the inventory
    assets.maintain("PC-2", local(2026, 11, 2, 12, 0), local(2026, 11, 2, 13, 0), "加装硬盘")
    clock.now = local(2026, 11, 3, 9, 0)
    reporter.inventory("ag-2", pc(serial="PC-W02", disk_serial="S2"))

    assert _hardware(engine, "ag-2") == []

    # The same swap with maintenance of another time is still a violation.
    clock.now = local(2026, 11, 4, 9, 0)
    reporter.inventory("ag-2", pc(serial="PC-W02", disk_serial="S3"))
    [(_, status, subject)] = _hardware(engine, "ag-2")
    assert status == "open" and "S3" in subject
