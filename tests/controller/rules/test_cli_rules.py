"""``counterguard violations …`` and the decision commands, run the way an admin runs them, on each back end."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from controller.db import session_scope
from controller.ingest import IngestService
from controller.models import Agent
from controller.policy.store import PolicyStore
from controller.rules.service import RulesService
from policies import DEFAULT_POLICY
from tests.controller.rules.builders import MINUTE, Facts, desktop_game, local
from tests.controller.cli_run import run

AGENT = "ag-cli-0001"


@pytest.fixture
def cli(tmp_path: Path, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]) -> Any:
    def invoke(*args: str) -> tuple[int, str, str]:
        return run(capsys, "--data-dir", str(tmp_path / "admin"), "--db", database_url, *args)

    def json_of(*args: str) -> Any:
        code, out, err = invoke(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    invoke.json = json_of  # type: ignore[attr-defined]
    return invoke


@pytest.fixture
def reported(engine: Engine, clock: Any) -> Facts:
    """The default policy active; an agent at window W07 that played a game and has a game installed."""
    PolicyStore(engine, clock).apply(DEFAULT_POLICY.read_text(encoding="utf-8"), "default.yaml", "test")
    with session_scope(engine) as session:
        session.add(Agent(id=AGENT, window="W07", enrolled_at=clock(), cert_serial="1", cert_fingerprint="f",
                          cert_not_after=clock() + dt.timedelta(days=365)))
    facts = Facts()
    start = local(2026, 11, 2, 10)
    facts.heartbeats(start, start + 30 * MINUTE)
    facts.software(start, [desktop_game("org.gnome.Mines.desktop")])
    facts.start(start + MINUTE, 4242, "gnome-mines")
    facts.stop(start + 20 * MINUTE, 4242, "gnome-mines", start + MINUTE)
    facts.shutdown(start + 30 * MINUTE + dt.timedelta(seconds=30))
    facts.stored.sort(key=lambda f: f.received_at)
    for number, stored in enumerate(facts.stored, 1):
        stored.fact.sequence = number
    clock.now = start + 31 * MINUTE
    IngestService(engine, clock).ingest(AGENT, facts.facts())
    RulesService(engine, PolicyStore(engine, clock), clock).on_ingest(AGENT, facts.facts())
    return facts


def test_list_show_confirm_and_dismiss(cli: Any, reported: Facts) -> None:
    listed = cli.json("violations", "list", "--month", "2026-11", "--workstation", "W07")
    by_rule = {v["rule_id"]: v for v in listed}
    assert set(by_rule) == {"games-video-music", "unapproved-software"}
    game = by_rule["games-video-music"]
    assert (game["ref"], game["penalty_points"], game["status"]) == ("R11.6; R9 7(2)14", 5, "open")

    code, out, _ = cli("violations", "list", "--rule", "games-video-music")
    assert code == 0 and "Violations (1)" in out and "R11.6" in out  # a table (columns cut at 80 characters)
    shown = cli.json("violations", "show", str(game["id"]))
    assert {f["kind"] for f in shown["facts"]} == {"process_started", "process_stopped"}
    assert "扫雷" in shown["summary"]
    code, out, _ = cli("violations", "show", str(game["id"]))
    assert code == 0 and "R11.6; R9 7(2)14" in out

    confirmed = cli.json("violations", "confirm", str(game["id"]), "--reason", "录像核实", "--by", "主任")
    assert (confirmed["status"], confirmed["status_by"]) == ("confirmed", "主任")
    code, out, _ = cli("violations", "dismiss", str(by_rule["unapproved-software"]["id"]), "-r", "test", "--by", "x")
    assert code == 0 and "dismissed by x" in out
    assert [v["rule_id"] for v in cli.json("violations", "list", "--status", "dismissed")] == ["unapproved-software"]


def test_approving_the_software_withdraws_its_violation(cli: Any, reported: Facts) -> None:
    code, out, err = cli("software", "approve", "org.gnome.Mines.desktop", "--window", "W07", "--reason", "培训用")

    assert code == 0, err
    assert "approved for window W07" in out and "1 withdrawn" in out
    [withdrawn] = cli.json("violations", "list", "--status", "withdrawn")
    assert (withdrawn["rule_id"], withdrawn["status_reason"]) == ("unapproved-software", "software approved afterwards")
    assert [d["decision"] for d in cli.json("software", "decisions")] == ["approved"]


def test_decision_commands_record_and_list(cli: Any, reported: Facts) -> None:
    added = cli.json("exemption", "add", "--workstation", AGENT, "--from", "2026-11-02 18:00",
                     "--to", "2026-11-02 21:00", "--reason", "加班")
    assert added["reason"] == "加班" and added["starts_at"].startswith("2026-11-02T10:00:00")
    assert [e["id"] for e in cli.json("exemption", "list")] == [added["id"]]
    code, out, _ = cli("exemption", "remove", str(added["id"]))
    assert code == 0 and cli.json("exemption", "list") == []

    device = cli.json("devices", "register", "--vendor-id", "096E", "--product-id", "0201", "--note", "签章UKey")
    assert (device["vendor_id"], device["serial"]) == ("096e", "")
    assert cli("unit", "add", "tax", "税务局")[0] == 0
    assert cli("staff", "add", "S007", "张三", "--unit", "tax")[0] == 0
    assert cli.json("account", "map", "zhang", "--staff", "S007", "--window", "W07,W08")["windows"] == "W07,W08"
    assert cli.json("maintenance", "add", "--workstation", AGENT, "--from", "2026-11-02", "--to", "2026-11-02",
                    "--note", "更换内存 王工")["note"] == "更换内存 王工"
    for listing in ("devices", "account", "maintenance"):
        assert len(cli.json(listing, "list")) == 1


def test_errors_are_one_sentence(cli: Any, reported: Facts) -> None:
    for args, message in (
        (("violations", "list", "--month", "2026/11"), "is not of the form YYYY-MM"),
        (("violations", "show", "999"), "no violation 999"),
        (("violations", "confirm", "999", "--reason", "x"), "no violation 999"),
        (("exemption", "add", "--workstation", "nobody", "--from", "2026-11-02", "--to", "2026-11-03", "-r", "加班"),
         "no agent 'nobody'"),
        (("exemption", "add", "--workstation", AGENT, "--from", "tomorrow", "--to", "2026-11-03", "-r", "加班"),
         "is not a date"),
        (("devices", "register", "--vendor-id", "xyz", "--product-id", "0201"), "is not four hex digits"),
        (("software", "approve", "x", "--unit", "a", "--window", "b"), "either a unit or a window"),
        (("account", "map", "zhang", "--staff", "S404"), "no staff member 'S404'; add them first with "
                                                         "`counterguard staff add`"),
    ):
        code, out, err = cli(*args)
        assert code == 1, (args, out, err)
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


def test_evaluate_again_over_a_range(cli: Any, reported: Facts) -> None:
    result = cli.json("violations", "evaluate", "--from", "2026-11-02", "--to", "2026-11-02", "--agent", AGENT)

    assert (result["created"], result["withdrawn"], result["agents"]) == (0, 0, 1)


def test_show_names_the_accounts_and_whom_the_violation_counts_against(cli: Any, reported: Facts) -> None:
    [game] = [v for v in cli.json("violations", "list") if v["rule_id"] == "games-video-music"]
    assert game["accounts"] == ["zhang"]
    shown = cli.json("violations", "show", str(game["id"]))
    assert shown["attribution"] == {"people": [], "unattributed": "account zhang is not mapped to any staff member "
                                                                  "(an outsider, R11.3)"}
    code, out, _ = cli("violations", "show", str(game["id"]))
    assert code == 0 and "unattributed" in out and "zhang" in out

    for args in (("unit", "add", "tax", "税务局"), ("staff", "add", "S007", "张三", "--unit", "tax"),
                 ("account", "map", "zhang", "--staff", "S007")):
        assert cli(*args)[0] == 0
    shown = cli.json("violations", "show", str(game["id"]))
    assert shown["attribution"] == {"people": [{"staff": "S007", "role": "user", "how": "account zhang",
                                                "name": "张三"}], "unattributed": ""}
    code, out, _ = cli("violations", "show", str(game["id"]))
    assert code == 0 and "counts against" in out and "S007 张三 (account zhang)" in out
