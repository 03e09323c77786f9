"""Notices in the Report answer, over real gRPC with real certificates, once per database back end.

A controller with the rules service and a stored policy; an enrolled agent reports programs it saw
start. With the policy's notices on, the answer carries one notice per violation that report recorded
first (the rule's notice text, else the policy's default; what and when in the body), none for an
informational rule, none when the same batch comes again; with them off, none at all.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from controller.config import Settings
from controller.evaluation import EvaluationQueue
from controller.load import ReportLoad
from controller.pki import ServerPKI
from controller.policy.loader import load_policy_text
from controller.policy.notices import when
from controller.policy.provider import StoredPolicyProvider
from controller.policy.store import PolicyStore
from controller.rules.records import VIOLATION
from controller.rules.service import RulesService
from controller.server import RunningServer, build_server
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2
from tests.controller.test_evaluation import Gate
from tests.controller.test_grpc_server import (
    TIMEOUT,
    Enrolled,
    _key_and_csr,
    enrol,
    fact,
    heartbeat,
    mtls,
    new_token,
    report,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
GAME_NOTICE = "工作时间请勿运行游戏,本次已记录"
DEFAULT_NOTICE = "您的操作违反了本中心的计算机使用规定,已记录。"

POLICY = """\
id: notices-test
version: "{version}"
name: 提示测试
timetable:
  periods: [{{start: "09:00", end: "17:00"}}]
catalogue:
  entries:
    - {{id: gnome-mines, name: 扫雷 (GNOME Mines), category: game, match: {{executables: [gnome-mines]}}}}
    - {{id: vlc, name: VLC, category: video, match: {{executables: [vlc]}}}}
    - {{id: taobao, name: 淘宝, category: shopping, match: {{executables: [taobao]}}}}
rules:
  - id: games
    kind: forbidden_program
    ref: R11.6; R9 7(2)14
    title: 打游戏
    categories: [game]
    notice: {game_notice}
  - id: videos
    kind: forbidden_program
    ref: R3 7(3)
    title: 看视频
    categories: [video]
    informational: true
    notice: 不应出现的提示
  - id: shopping
    kind: forbidden_program
    ref: R12 3(4)2
    title: 网购
    categories: [shopping]
agent:
  notices_enabled: {enabled}
  notice_default: {default_notice}
"""


def policy_text(enabled: bool, version: str = "1") -> str:
    return POLICY.format(version=version, enabled=str(enabled).lower(), game_notice=GAME_NOTICE,
                         default_notice=DEFAULT_NOTICE)


@pytest.fixture
def clock(clock):  # type: ignore[no-untyped-def]
    """The shared FakeClock, set to the real present: TLS checks certificates against the real time."""
    clock.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return clock


@pytest.fixture
def store(engine: Engine, clock) -> PolicyStore:  # type: ignore[no-untyped-def]
    return PolicyStore(engine, clock)


@pytest.fixture
def running(tmp_path, engine: Engine, pki: ServerPKI, store: PolicyStore, clock) -> Iterator[RunningServer]:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "controller", listen="127.0.0.1:0", enroll_listen="127.0.0.1:0")
    server = build_server(settings, engine, pki, clock, policies=StoredPolicyProvider(store, clock=clock),
                          rules=RulesService(engine, store, clock))
    server.start()
    yield server
    server.stop(None)


@pytest.fixture
def enrolled(running: RunningServer, pki: ServerPKI, engine: Engine, clock) -> Enrolled:  # type: ignore[no-untyped-def]
    key, csr = _key_and_csr()
    return Enrolled(enrol(running, pki, new_token(engine, clock), csr), key)


def started(sequence: int, when_: dt.datetime, pid: int, name: str) -> facts_pb2.Fact:
    process = facts_pb2.ProcessInfo(pid=pid, name=name, executable=f"/usr/bin/{name}", username="zhang")
    process.started_at.FromDatetime(when_)
    return fact(sequence, when_, process_started=facts_pb2.ProcessStarted(process=process))


def programs_started(clock) -> list[facts_pb2.Fact]:  # type: ignore[no-untyped-def]
    now = clock()
    return [heartbeat(1, now), started(2, now, 101, "gnome-mines"), started(3, now, 102, "vlc"),
            started(4, now, 103, "taobao")]


def stored_keys(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {row.rule_id: row.key for row in conn.execute(select(VIOLATION.c.rule_id, VIOLATION.c.key))}


def test_a_report_that_records_violations_carries_one_notice_each(
        running: RunningServer, enrolled: Enrolled, store: PolicyStore, engine: Engine, clock) -> None:  # type: ignore[no-untyped-def]
    store.apply(policy_text(enabled=True), "notices.yaml", "test")

    with mtls(running, enrolled) as channel:
        answer = report(channel, programs_started(clock))
        policy = agent_pb2_grpc.AgentServiceStub(channel).FetchPolicy(agent_pb2.FetchPolicyRequest(), timeout=TIMEOUT)

    keys = stored_keys(engine)
    assert set(keys) == {"games", "videos", "shopping"}, "the informational rule records its violation too"
    by_rule = {n.rule_id: n for n in answer.notices}
    assert set(by_rule) == {"games", "shopping"}, "an informational violation is never announced"
    local_time = clock().astimezone(SHANGHAI).strftime("%H:%M")
    game = by_rule["games"]
    assert (game.title, game.violation_key) == (GAME_NOTICE, keys["games"])
    assert game.body == f"扫雷 (GNOME Mines) · {local_time} · R11.6; R9 7(2)14"
    assert game.occurred_at.ToDatetime(dt.UTC) == clock()
    shopping = by_rule["shopping"]
    assert (shopping.title, shopping.body) == (DEFAULT_NOTICE, f"淘宝 · {local_time} · R12 3(4)2")
    assert policy.policy.notices_enabled


def test_a_batch_sent_again_and_later_facts_about_the_same_violation_notify_nothing(
        running: RunningServer, enrolled: Enrolled, store: PolicyStore, clock) -> None:  # type: ignore[no-untyped-def]
    store.apply(policy_text(enabled=True), "notices.yaml", "test")
    batch = programs_started(clock)

    with mtls(running, enrolled) as channel:
        first = report(channel, batch)
        again = report(channel, batch)
        clock.advance(seconds=30)
        later = report(channel, [heartbeat(5, clock())])
        clock.advance(seconds=30)
        another_game = report(channel, [started(6, clock(), 104, "gnome-mines")])

    assert len(first.notices) == 2
    assert (again.acknowledged_sequence, list(again.notices)) == (4, [])
    assert list(later.notices) == []
    assert [(n.rule_id, n.title) for n in another_game.notices] == [("games", GAME_NOTICE)], \
        "a second run of the game is a new violation (one per session), so a new notice"


def test_no_notices_when_the_policy_has_them_off(
        running: RunningServer, enrolled: Enrolled, store: PolicyStore, engine: Engine, clock) -> None:  # type: ignore[no-untyped-def]
    store.apply(policy_text(enabled=False), "notices.yaml", "test")

    with mtls(running, enrolled) as channel:
        answer = report(channel, programs_started(clock))
        policy = agent_pb2_grpc.AgentServiceStub(channel).FetchPolicy(agent_pb2.FetchPolicyRequest(), timeout=TIMEOUT)

    assert set(stored_keys(engine)) == {"games", "videos", "shopping"}
    assert list(answer.notices) == []
    assert not policy.policy.notices_enabled


def test_answers_that_wait_for_their_own_slow_evaluation_keep_getting_their_notices(
        tmp_path, engine: Engine, pki: ServerPKI, store: PolicyStore, clock) -> None:  # type: ignore[no-untyped-def]
    """As ``serve`` builds it: the evaluation queue, and the load whose average makes the rules yield.
    Each evaluation of this one workstation takes 1.5 s (its first inventory on a slow host); its
    answers wait for them because the threads are free, and that wait is not load: the rules must not
    start yielding, or the next answer would go without its notice and the person at the screen would
    hear of the game only with the agent's next report, up to a heartbeat later."""
    store.apply(policy_text(enabled=True), "notices.yaml", "test")
    load = ReportLoad(0, 0.5)  # the rules yield while Reports take over 500 ms on average (a slow CI's margin)
    gate = Gate(RulesService(engine, store, clock))
    evaluations = EvaluationQueue(gate, threads=2, wait_seconds=30, pressed=load.pressed)
    settings = Settings(data_dir=tmp_path / "controller", listen="127.0.0.1:0", enroll_listen="127.0.0.1:0")
    server = build_server(settings, engine, pki, clock, policies=StoredPolicyProvider(store, clock=clock),
                          rules=evaluations, load=load)
    evaluations.start()
    server.start()
    try:
        key, csr = _key_and_csr()
        agent = Enrolled(enrol(server, pki, new_token(engine, clock), csr), key)
        gate.held.add(agent.response.agent_id)
        answers = []
        with mtls(server, agent) as channel:
            for sequence, pid in ((1, 101), (2, 102)):
                gate.opened.clear()
                threading.Timer(1.5, gate.release).start()  # this evaluation takes 1.5 s
                answers.append(report(channel, [started(sequence, clock(), pid, "gnome-mines")]))
                clock.advance(seconds=60)  # the game closed and started again: a new violation
    finally:
        gate.release()
        server.stop(None)
        evaluations.stop()

    assert gate.calls[agent.response.agent_id] == 2
    assert [[n.rule_id for n in answer.notices] for answer in answers] == [["games"], ["games"]]
    assert not load.pressed() and load.average < 0.5


def test_the_default_policy_ships_with_notices_off_and_a_text_on_every_scored_rule() -> None:
    from policies import DEFAULT_POLICY

    policy = load_policy_text(DEFAULT_POLICY.read_text(encoding="utf-8"), str(DEFAULT_POLICY))

    assert not policy.agent.notices_enabled
    assert all(rule.notice for rule in policy.rules if rule.penalty.points and not rule.informational)


def test_the_time_of_an_old_violation_comes_with_its_date() -> None:
    policy = load_policy_text(policy_text(enabled=True), "notices.yaml")
    now = dt.datetime(2026, 11, 4, 6, 0, tzinfo=dt.UTC)  # 14:00 in Shanghai

    assert when(now - dt.timedelta(minutes=5), policy, now) == "13:55"
    assert when(now - dt.timedelta(days=2, minutes=5), policy, now) == "11-02 13:55"
