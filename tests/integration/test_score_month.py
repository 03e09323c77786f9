"""A month of a small centre through the real controller, and its score sheet checked against one written by hand.

The centre: three units, three windows with A and B posts, eight staff. At M01 刘洋 takes over the
A post from 陈静 on 16 November (a substitution mid-month); 周杰 (A post of P01) is on leave from 9
to 13 November; the account ``clerk`` at T01 is shared by 王芳 and 李强; ``guest`` is nobody's.

The organisation, the manual entries and the decisions are recorded with the admin CLI (run in
this process, against the controller's database); three workstations enrol with real certificates and send
November's facts (games started under an account, machines left on after work) over mutual-TLS
``Report``, as an outbox drains after an outage: the controller's clock is set to 30 November with
the ``COUNTERGUARD_FAKE_NOW`` hook and each workstation's batch ends with a fact observed "now", so
the agents' clocks are right. The sheet comes from ``counterguard score month`` in its own process.
Then a dismissal, closing the month, a late dismissal that must not change it, reopening, and the
regulation-12 money policy over the same month.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.enroll import CA_FILE, CERT_FILE, KEY_FILE, enroll
from tests.controller.cli_run import run
from tests.controller.rules.builders import Facts, local
from tests.integration.processes import Controller, start_controller
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc

pytestmark = pytest.mark.integration

FAKE_NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
POLICIES = Path(__file__).resolve().parents[2] / "policies"

ROSTER = """code,name,unit,window,post,from
S01,王芳,tax,T01,A,2026-10-01
S02,李强,tax,T01,B,2026-10-01
S03,陈静,market,M01,A,2026-10-01
S04,刘洋,market,,,
S05,赵敏,market,M01,B,2026-10-01
S06,周杰,police,P01,A,2026-10-01
S07,孙丽,police,P01,B,2026-10-01
S08,吴刚,police,,,
"""
ACCOUNTS = {"wangfang": "S01", "chenjing": "S03", "liuyang": "S04", "zhaomin": "S05", "zhoujie": "S06"}
ENTRIES = """工号,姓名,项目,分值,票数,依据,事由
S02,李强,附加分,3,,R9 6,拾金不昧
S05,赵敏,规范服务,-2,,R9 7(1)2,着装不规范
S08,吴刚,规范服务,-32,,R9 7(1),多次服务投诉
S08,吴刚,工作业绩,-35,,R9 7(3),业务差错
S01,王芳,窗口互评,,19/20,R9 7(4),
S03,陈静,窗口互评,,15/20,R9 7(4),
S07,孙丽,窗口互评,,10/20,R9 7(4),
"""

# What happened at each workstation in November: (day, what, account).
GAME, LEFT_ON = "game", "left on"
MONTH_AT = {
    "T01": [(3, GAME, "wangfang"), (4, GAME, "clerk"), (5, LEFT_ON, "")],
    "M01": [(10, GAME, "chenjing"), (12, LEFT_ON, ""), (17, LEFT_ON, ""), (18, GAME, "liuyang"),
            (19, GAME, "liuyang"), (20, GAME, "liuyang"), (23, GAME, "liuyang"), (26, GAME, "zhaomin")],
    "P01": [(10, LEFT_ON, ""), (24, GAME, "zhoujie"), (25, GAME, "guest")],
}

# The sheet, worked out by hand from the above under the default policy (regulation 9):
# 规范服务, 工作纪律, 工作业绩, 窗口互评, 附加分 → 总分, 名次.
#   S01: game 3rd −5, left on 5th −1 (no account: A post)          votes 19/20 优秀
#   S02: bonus +3; the shared account's game (4th) is nobody's: both were on duty at T01
#   S03: game 10th −5, left on 12th −1 (A post until the 15th)      votes 15/20 一般 5
#   S04: left on 17th −1 (A post from the 16th), four games −20    (no votes: 10 stays)
#   S05: dress −2 (规范服务), game 26th −5 (own account at the B post)
#   S06: game 24th −5; his PC left on the 10th is S07's (B post, S06 on leave)
#   S07: left on 10th −1                                            votes 10/20 差 0
#   S08: 规范服务 −32 → −2 (不设底线), 工作业绩 −35 → 0 (扣完为止)
EXPECTED = {
    "S01": ([30, 24, 30, 10], 0, 94, 3),
    "S02": ([30, 30, 30, 10], 3, 103, 1),
    "S03": ([30, 24, 30, 5], 0, 89, 5),
    "S04": ([30, 9, 30, 10], 0, 79, 7),
    "S05": ([28, 25, 30, 10], 0, 93, 4),
    "S06": ([30, 25, 30, 10], 0, 95, 2),
    "S07": ([30, 29, 30, 0], 0, 89, 5),
    "S08": ([-2, 30, 0, 10], 0, 38, 8),
}
# The same month under regulation 12 (policies/examples/r12-money.yaml): 50 yuan per game for the user
# and the PC's owner (the A post holder) once each; after more than 3 of a kind: 通报主管部门.
EXPECTED_YUAN = {"S01": 50, "S02": 0, "S03": 50, "S04": 250, "S05": 50, "S06": 50, "S07": 0, "S08": 0}


def cli(capsys: pytest.CaptureFixture[str], controller: Controller, *args: str) -> str:
    """An admin command run in this process against the controller's database."""
    code, out, err = run(capsys, "--data-dir", str(controller.data_dir), *args)
    assert code == 0, f"counterguard {' '.join(args)}: {err}"
    return out


def set_up_centre(capsys: pytest.CaptureFixture[str], controller: Controller, tmp_path: Path) -> None:
    for code, name, home in (("tax", "税务局", "市税务局"), ("market", "市场监管局", "市市场监管局"),
                             ("police", "公安局", "市公安局")):
        cli(capsys, controller, "unit", "add", code, name, "--home-department", home)
    for window, unit in (("T01", "tax"), ("M01", "market"), ("P01", "police")):
        cli(capsys, controller, "window", "add", window, "--unit", unit)
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER, encoding="utf-8")
    cli(capsys, controller, "staff", "import", str(roster))
    cli(capsys, controller, "assign", "S04", "--window", "M01", "--post", "A", "--from", "2026-11-16")
    cli(capsys, controller, "staff", "leave", "S06", "--from", "2026-11-09", "--to", "2026-11-13", "--reason", "年假")
    for account, staff in [*ACCOUNTS.items(), ("clerk", "S01"), ("clerk", "S02")]:
        cli(capsys, controller, "account", "map", account, "--staff", staff)


def enrol(capsys: pytest.CaptureFixture[str], controller: Controller, window: str, state: Path) -> grpc.Channel:
    """A workstation of ``window`` enrolled by the agent's own enrolment code; its mutual-TLS channel."""
    token = json.loads(cli(capsys, controller, "token", "create", "--window", window, "--expires", "1d", "--json"))
    enroll(f"127.0.0.1:{controller.enroll_port}", token["token"], controller.ca_cert, state, hostname=window.lower())
    key, cert, ca = ((state / name).read_bytes() for name in (KEY_FILE, CERT_FILE, CA_FILE))
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(f"127.0.0.1:{controller.port}", credentials)


def november(events: list[tuple[int, str, str]], now: dt.datetime) -> Facts:
    """The workstation's month: each game a 20-minute run at 10:00, each evening on until 18:00; then "now"."""
    facts = Facts()
    for pid, (day, what, account) in enumerate(events, start=4000):
        if what == GAME:
            facts.boot(local(2026, 11, day, 9, 55))
            facts.start(local(2026, 11, day, 10), pid, "gnome-mines", user=account)
            facts.stop(local(2026, 11, day, 10, 20), pid, "gnome-mines", local(2026, 11, day, 10))
            facts.shutdown(local(2026, 11, day, 10, 25))
        else:
            facts.boot(local(2026, 11, day, 16, 50))
            facts.heartbeats(local(2026, 11, day, 16, 52), local(2026, 11, day, 18), every=dt.timedelta(minutes=2))
            facts.shutdown(local(2026, 11, day, 18, 2))
    facts.boot(now)
    facts.heartbeats(now, now)
    return facts


def sheet(controller: Controller) -> dict[str, Any]:
    """``counterguard score month 2026-11 --format json`` in its own process."""
    return dict(json.loads(controller.cli("score", "month", "2026-11", "--format", "json").stdout))


def points(document: dict[str, Any]) -> dict[str, tuple[list[float], float, float, int]]:
    return {p["staff"]: ([s["value"] for s in p["sections"]], p["bonus"], p["total"], p["rank"])
            for p in document["people"]}


def test_a_month_of_a_small_centre_gives_the_sheet_worked_out_by_hand(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    controller = start_controller(tmp_path / "controller", env={"COUNTERGUARD_FAKE_NOW": FAKE_NOW.isoformat()})
    started = time.monotonic()
    try:
        set_up_centre(capsys, controller, tmp_path)
        for window, events in MONTH_AT.items():
            channel = enrol(capsys, controller, window, tmp_path / f"agent-{window}")
            now = FAKE_NOW.astimezone(dt.UTC) + dt.timedelta(seconds=time.monotonic() - started)
            facts = november(events, now)
            answer = agent_pb2_grpc.AgentServiceStub(channel).Report(
                agent_pb2.ReportRequest(facts=facts.facts()), timeout=60)
            assert answer.acknowledged_sequence == facts.sequence
            channel.close()
        entries = tmp_path / "entries.csv"
        entries.write_text(ENTRIES, encoding="utf-8")
        cli(capsys, controller, "score", "import", str(entries), "--month", "2026-11", "--by", "考核组")

        found = [v for v in json.loads(cli(capsys, controller, "violations", "list", "--month", "2026-11", "--json"))
                 if v["status"] == "open"]
        by_what = {(v["window"], v["local_date"][-2:], v["rule_id"]): v["id"] for v in found}
        assert sorted(by_what) == sorted(
            (window, f"{day:02d}", "games-video-music" if what == GAME else "powered-on-after-hours")
            for window, events in MONTH_AT.items() for day, what, _ in events)

        first = sheet(controller)

        assert points(first) == EXPECTED
        assert [p["staff"] for p in first["people"] if p["advanced"]] == ["S02", "S06", "S01"]
        assert [p["staff"] for p in first["people"] if p["tied"]] == ["S03", "S07"]
        s04 = next(p for p in first["people"] if p["staff"] == "S04")
        assert s04["flags"] == ["R9 article 8: 4 violations of games-video-music (R11.6; R9 7(2)14) this month"]
        left_on = next(line for line in s04["lines"] if line["rule_id"] == "powered-on-after-hours")
        assert left_on["violation_ids"] == [by_what[("M01", "17", "powered-on-after-hours")]]
        assert left_on["how"] == "A post on duty at window M01"
        s07 = next(p for p in first["people"] if p["staff"] == "S07")
        assert "S06 absent" in s07["lines"][0]["how"]
        assert sorted((u["violation_id"], u["window"]) for u in first["unattributed"]) == sorted(
            [(by_what[("T01", "04", "games-video-music")], "T01"), (by_what[("P01", "25", "games-video-music")], "P01")])
        shared = next(u for u in first["unattributed"] if u["window"] == "T01")["reason"]
        assert "clerk" in shared and "S01 and S02" in shared

        # A dismissed violation disappears from the sheet.
        s06_game = by_what[("P01", "24", "games-video-music")]
        cli(capsys, controller, "violations", "dismiss", str(s06_game), "--reason", "培训演示", "--by", "主任")
        assert points(sheet(controller))["S06"] == ([30, 30, 30, 10], 0, 100, 2)

        # Closed, the month stays as it is after a late dismissal; reopening is explicit and logged.
        cli(capsys, controller, "score", "close", "2026-11", "--by", "主任", "--reason", "十一月考核")
        cli(capsys, controller, "violations", "dismiss", str(by_what[("T01", "03", "games-video-music")]),
            "--reason", "late", "--by", "主任")
        closed = sheet(controller)
        assert closed["closed_by"] == "主任" and points(closed)["S01"] == EXPECTED["S01"]
        cli(capsys, controller, "score", "reopen", "2026-11", "--reason", "按第12号制度核算", "--by", "主任")
        history = json.loads(cli(capsys, controller, "score", "history", "2026-11", "--json"))
        assert [(e["action"], e["by"], e["reason"]) for e in history] == [
            ("close", "主任", "十一月考核"), ("reopen", "主任", "按第12号制度核算")]

        # The same month under regulation 12's money scheme.
        cli(capsys, controller, "policy", "apply", str(POLICIES / "examples" / "r12-money.yaml"), "--by", "test")
        cli(capsys, controller, "violations", "evaluate", "--from", "2026-11-01", "--to", "2026-11-30")
        money = sheet(controller)

        assert money["scheme"] == "money" and money["policy_id"] == "r12-money"
        assert {p["staff"]: p["money"] for p in money["people"]} == EXPECTED_YUAN
        escalated = {p["staff"]: [(e["rule_id"], e["count"], e["as_user"], e["as_owner"], e["department"])
                                  for e in p["escalations"]] for p in money["people"] if p["escalations"]}
        assert escalated == {"S04": [("shopping-chat-games-video", 5, 4, 1, "市市场监管局")]}
        s04_owner = [line for line in next(p for p in money["people"] if p["staff"] == "S04")["lines"]
                     if line["role"] == "owner"]
        assert [(line["date"], line["money"]) for line in s04_owner] == [("2026-11-26", 50)]
        assert len(money["unattributed"]) == 2
    finally:
        controller.stop()
