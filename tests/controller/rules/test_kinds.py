"""Every rule kind at least once found and once not found, with the decisions that change the outcome."""

from __future__ import annotations

import datetime as dt

from controller.policy.model import AgentSettings, AntivirusProduct, Occurrence, RuleKind, When
from controller.rules.evaluate import Account, Approval, Device, RuleContext, TimeSpan
from protos.counterguard.v1 import facts_pb2 as pb
from tests.controller.rules.builders import (
    MINUTE,
    Facts,
    desktop_game,
    dpkg,
    evaluate,
    local,
    machine,
    policy,
    rule,
)

MONDAY = dt.date(2026, 11, 2)


def at(hour: int, minute: int = 0, day: int = 2) -> dt.datetime:
    return local(2026, 11, day, hour, minute)


# ------------------------------------------------------------------------------ unapproved software

SOFTWARE = policy(rule(RuleKind.UNAPPROVED_SOFTWARE))


def test_an_installed_game_is_unapproved_software_once_however_often_it_is_listed() -> None:
    facts = Facts()
    for day in (2, 3, 4):  # a full list at every agent start
        facts.software(at(9, day=day), [dpkg("coreutils"), desktop_game()])

    found = evaluate(SOFTWARE, facts)

    assert [(v.subject, v.category) for v in found] == [("desktop-entry:cg-mines.desktop (Mines)", "game")]
    assert found[0].occurred_at == at(9)
    assert "the catalogue puts it in game (desktop_category:Game)" in found[0].evidence_summary


def test_removing_and_reinstalling_is_the_same_violation() -> None:
    facts = Facts()
    facts.software(at(9), [desktop_game()])
    facts.delta(at(10), removed=[desktop_game()])
    facts.delta(at(11), added=[desktop_game()])

    assert len(evaluate(SOFTWARE, facts)) == 1


def test_office_software_and_approved_games_are_no_violation() -> None:
    facts = Facts()
    facts.software(at(9), [dpkg("wps-office"), dpkg("gnome-mines", section="games")])

    assert [v.subject for v in evaluate(SOFTWARE, facts)] == ["dpkg:gnome-mines"]
    approved = RuleContext(window="W01", approvals=(Approval("gnome-mines", "dpkg", "window", "approved"),))
    assert evaluate(SOFTWARE, facts, approved) == []


def test_a_decision_names_software_in_any_case_and_only_for_the_source_it_gives() -> None:
    facts = Facts()
    facts.software(at(9), [dpkg("Gnome-Mines", section="games"), dpkg("tux-racer", section="games")])
    context = RuleContext(window="W01", approvals=(
        Approval("GNOME-MINES", "DPKG", "window", "approved"),
        Approval("tux-racer", "desktop-entry", "window", "approved"),  # another source's program of that name
    ))

    assert [v.subject for v in evaluate(SOFTWARE, facts, context)] == ["dpkg:tux-racer"]


def test_the_most_specific_decision_wins_and_a_denial_forbids_any_program() -> None:
    facts = Facts()
    facts.software(at(9), [dpkg("gnome-mines", section="games"), dpkg("curl")])
    context = RuleContext(window="W01", approvals=(
        Approval("gnome-mines", "", "all", "approved"),
        Approval("gnome-mines", "", "window", "denied"),
        Approval("curl", "dpkg", "unit", "denied"),
    ))

    assert sorted(v.subject for v in evaluate(SOFTWARE, facts, context)) == ["dpkg:curl", "dpkg:gnome-mines"]


def test_allow_list_flags_what_is_neither_approved_nor_office_software() -> None:
    allow = policy(rule(RuleKind.UNAPPROVED_SOFTWARE, mode="allow_list", categories=[]))
    facts = Facts()
    facts.software(at(9), [dpkg("wps-office"), dpkg("bank-client"), dpkg("tax-client")])
    context = RuleContext(window="W01", approvals=(Approval("tax-client", "", "unit", "approved"),))

    assert [v.subject for v in evaluate(allow, facts, context)] == ["dpkg:bank-client"]


# ------------------------------------------------------------------------------ powered on after hours

AFTER_HOURS = policy(rule(RuleKind.POWERED_ON_AFTER_HOURS, per=Occurrence.DAY, grace_minutes=30))


def test_a_computer_still_on_half_an_hour_after_work_is_one_violation_that_day() -> None:
    facts = Facts()
    facts.heartbeats(at(8, 50), at(19))

    found = evaluate(AFTER_HOURS, facts)

    assert [(v.local_date, v.occurred_at) for v in found] == [(MONDAY, at(17, 30))]
    assert "17:30" in found[0].evidence_summary and found[0].period_end == at(19)


def test_switched_off_in_time_or_on_a_day_off_is_no_violation() -> None:
    in_time = Facts()
    in_time.heartbeats(at(8, 50), at(17, 20))
    in_time.shutdown(at(17, 21))
    assert evaluate(AFTER_HOURS, in_time) == []

    saturday = Facts()
    saturday.heartbeats(local(2026, 11, 7, 9), local(2026, 11, 7, 22))
    assert evaluate(AFTER_HOURS, saturday) == []


def test_on_over_the_weekend_counts_for_friday_only() -> None:
    facts = Facts()
    facts.heartbeats(local(2026, 11, 6, 16), local(2026, 11, 9, 8), every=5 * MINUTE)

    assert [v.local_date for v in evaluate(AFTER_HOURS, facts)] == [dt.date(2026, 11, 6)]


def test_a_gap_in_the_heartbeats_at_the_cut_off_gives_the_benefit_of_the_doubt() -> None:
    facts = Facts()
    facts.heartbeats(at(16), at(17, 25))
    facts.boot(at(17, 40))
    facts.heartbeats(at(17, 41), at(18))

    assert evaluate(AFTER_HOURS, facts) == []


# ------------------------------------------------------------------------------ activity outside hours

ACTIVITY = policy(rule(RuleKind.ACTIVITY_OUTSIDE_HOURS, when=When.OUTSIDE_WORKING_TIME, per=Occurrence.DAY,
                       grace_minutes=15))


def evening(facts: Facts, start: dt.datetime, end: dt.datetime) -> None:
    facts.heartbeats(start - 5 * MINUTE, end + 10 * MINUTE)
    facts.active(start)
    facts.idle(end + 5 * MINUTE, idle_seconds=300)


def test_use_in_the_evening_is_activity_outside_working_hours() -> None:
    facts = Facts()
    evening(facts, at(19), at(19, 40))

    found = evaluate(ACTIVITY, facts)

    assert [(v.subject, v.local_date) for v in found] == [("user zhang", MONDAY)]
    assert "40 min" in found[0].evidence_summary and found[0].period_end == at(19, 40)


def test_an_exemption_covers_overtime_and_the_lunch_break_and_grace_are_not_outside_hours() -> None:
    facts = Facts()
    evening(facts, at(19), at(19, 40))
    overtime = RuleContext(window="W01", exemptions=(TimeSpan(at(18), at(21), "加班"),))
    assert evaluate(ACTIVITY, facts, overtime) == []

    lunch = Facts()
    evening(lunch, at(12, 10), at(12, 50))
    assert evaluate(ACTIVITY, lunch) == []

    finishing = Facts()
    evening(finishing, at(16, 50), at(17, 10))
    assert evaluate(ACTIVITY, finishing) == []


def test_weekend_use_counts_per_day() -> None:
    facts = Facts()
    evening(facts, local(2026, 11, 7, 10), local(2026, 11, 7, 11))
    evening(facts, local(2026, 11, 8, 10), local(2026, 11, 8, 11))

    assert [v.local_date for v in evaluate(ACTIVITY, facts)] == [dt.date(2026, 11, 7), dt.date(2026, 11, 8)]


# ------------------------------------------------------------------------------ removable storage

STORAGE = policy(rule(RuleKind.REMOVABLE_STORAGE, per=Occurrence.SESSION))


def test_an_unregistered_usb_stick_is_one_violation_per_attachment() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(12))
    facts.storage(at(10), pb.RemovableStorage.ACTION_ATTACHED)
    facts.storage(at(10, 1), pb.RemovableStorage.ACTION_MOUNTED, device="sdb1", mount_point="/media/zhang/U")
    facts.storage(at(10, 30), pb.RemovableStorage.ACTION_REMOVED)
    facts.storage(at(11), pb.RemovableStorage.ACTION_ATTACHED)

    found = evaluate(STORAGE, facts)

    assert len(found) == 2
    assert "/media/zhang/U" in found[0].evidence_summary and found[0].period_end == at(10, 30)


def test_registered_devices_are_no_violation() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(12))
    facts.storage(at(10), pb.RemovableStorage.ACTION_ATTACHED, serial="KEY-1")
    by_serial = RuleContext(window="W01", devices=(Device("0781", "5581", "KEY-1"),))
    by_model = RuleContext(window="W01", devices=(Device("0781", "5581"),))
    other = RuleContext(window="W01", devices=(Device("0781", "5581", "KEY-2"),))

    assert evaluate(STORAGE, facts, by_serial) == evaluate(STORAGE, facts, by_model) == []
    assert len(evaluate(STORAGE, facts, other)) == 1


# ------------------------------------------------------------------------------ session accounts

SESSIONS = policy(rule(RuleKind.SESSION_ACCOUNT, per=Occurrence.SESSION))


def test_an_account_mapped_to_nobody_is_r11_3_and_one_for_another_window_r11_1() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(12))
    facts.login(at(9, 5), "visitor")
    facts.login(at(9, 10), "li", terminal="pts/1")
    facts.session_snapshot(at(10), [facts.session("visitor", at(9, 5)), facts.session("li", at(9, 10), "pts/1")])
    context = RuleContext(window="W01", accounts=(Account("li", "李四", ("W02",)),))

    found = {v.subject.split(" (")[0]: v.evidence_summary for v in evaluate(SESSIONS, facts, context)}

    assert set(found) == {"account visitor", "account li"}
    assert "R11.3" in found["account visitor"] and "李四" in found["account li"] and "R11.1" in found["account li"]


def test_an_account_mapped_to_staff_of_this_window_is_no_violation() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(12))
    facts.login(at(9, 5), "zhang")
    mapped = RuleContext(window="W01", accounts=(Account("ZHANG", "张三", ("W01", "W02")),))
    expired = RuleContext(window="W01", accounts=(Account("zhang", "张三", (), None, at(9)),))

    assert evaluate(SESSIONS, facts, mapped) == []
    assert len(evaluate(SESSIONS, facts, expired)) == 1


# ------------------------------------------------------------------------------ inventories

HARDWARE = policy(rule(RuleKind.HARDWARE_CHANGED, per=Occurrence.ONCE))
OS = policy(rule(RuleKind.OS_REINSTALLED, per=Occurrence.ONCE))
NETWORK = policy(rule(RuleKind.NETWORK_CHANGED, per=Occurrence.ONCE, informational=True))


def test_a_disk_replaced_without_a_maintenance_record_is_a_hardware_change() -> None:
    facts = Facts()
    facts.inventory(at(9), machine())
    facts.inventory(at(9, day=3), machine(disk_serial="S2"))
    facts.inventory(at(9, day=4), machine(disk_serial="S2"))

    found = evaluate(HARDWARE, facts)

    assert len(found) == 1
    assert "disk serial S1 removed" in found[0].evidence_summary and "disk serial S2 added" in found[0].evidence_summary
    record = RuleContext(window="W01", maintenance=(TimeSpan(at(14), at(16), "硬盘更换 王工"),))
    assert evaluate(HARDWARE, facts, record) == []


def test_the_same_inventory_or_a_little_memory_drift_is_no_hardware_change() -> None:
    facts = Facts()
    facts.inventory(at(9), machine())
    facts.inventory(at(9, day=3), machine(memory=16 * 2**30 - 20 * 2**20))

    assert evaluate(HARDWARE, facts) == []


def test_a_new_machine_id_on_the_same_hardware_is_an_os_reinstall() -> None:
    facts = Facts()
    facts.inventory(at(9), machine())
    facts.inventory(at(9, day=3), machine(machine_id="m2"))

    found = evaluate(OS, facts)

    assert len(found) == 1 and "machine id changed from m1 to m2" in found[0].evidence_summary
    assert evaluate(HARDWARE, facts) == []


def test_other_hardware_with_another_machine_id_is_no_os_reinstall() -> None:
    facts = Facts()
    facts.inventory(at(9), machine())
    other = machine(machine_id="m2", disk_serial="S9")
    other.system.serial, other.system.board_serial = "PC999", "MB999"
    facts.inventory(at(9, day=3), other)

    assert evaluate(OS, facts) == []


def test_a_new_gateway_is_an_informational_network_change() -> None:
    facts = Facts()
    facts.inventory(at(9), machine())
    facts.inventory(at(9, day=3), machine(gateway="10.0.9.1", address="10.0.9.5/24"))
    facts.inventory(at(9, day=4), machine(gateway="10.0.9.1", address="10.0.9.5/24"))

    found = evaluate(NETWORK, facts)

    assert len(found) == 1 and found[0].informational
    assert "default gateway 10.0.0.1 → 10.0.9.1" in found[0].evidence_summary
    unchanged = Facts()
    unchanged.inventory(at(9), machine())
    unchanged.inventory(at(9, day=3), machine())
    assert evaluate(NETWORK, unchanged) == []


# ------------------------------------------------------------------------------ antivirus

ANTIVIRUS = policy(rule(RuleKind.ANTIVIRUS, per=Occurrence.DAY), agent=AgentSettings(antivirus=[
    AntivirusProduct(name="火绒安全", process_names=["HipsDaemon.exe"], max_days_without_scan=7),
    AntivirusProduct(name="ClamAV", process_names=["clamd"]),
]))


def product(name: str, installed: bool = True, running: bool = True,
            last_scan: dt.datetime | None = None) -> pb.AntivirusProduct:
    message = pb.AntivirusProduct(name=name, installed=installed, running=running)
    if last_scan is not None:
        message.last_scan.FromDatetime(last_scan)
    return message


def test_no_accepted_antivirus_running_is_one_violation_per_day_the_computer_is_on() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(17))
    facts.antivirus(at(9, 1), product("火绒安全", running=False), product("ClamAV", installed=False, running=False))
    facts.heartbeats(at(9, day=3), at(12, day=3))

    found = evaluate(ANTIVIRUS, facts)

    assert [v.local_date for v in found] == [MONDAY, dt.date(2026, 11, 3)]
    assert "None of the centre's antivirus products" in found[0].evidence_summary


def test_one_accepted_product_running_is_enough_unless_its_scans_are_overdue() -> None:
    running = Facts()
    running.heartbeats(at(9), at(17))
    running.antivirus(at(9, 1), product("ClamAV"), product("火绒安全", installed=False, running=False))
    assert evaluate(ANTIVIRUS, running) == []

    overdue = Facts()
    overdue.heartbeats(at(9), at(17))
    overdue.antivirus(at(9, 1), product("火绒安全", last_scan=at(9, day=1) - dt.timedelta(days=10)))
    found = evaluate(ANTIVIRUS, overdue)
    assert [v.subject for v in found] == ["antivirus scan overdue"]

    without_products = policy(rule(RuleKind.ANTIVIRUS))
    assert evaluate(without_products, overdue) == []


# ------------------------------------------------------------------------------ agent silent

SILENT = policy(rule(RuleKind.AGENT_SILENT, when=When.WORKING_TIME, per=Occurrence.DAY, grace_minutes=30))


def test_an_agent_silent_while_its_computer_is_on_is_found_up_to_now() -> None:
    facts = Facts()
    facts.heartbeats(at(9), at(10))

    found = evaluate(SILENT, facts, end=at(11, 30))

    assert len(found) == 1 and found[0].occurred_at == at(10, 30) and found[0].period_end == at(11, 30)
    assert evaluate(SILENT, facts, end=at(10, 20)) == []


def test_a_reported_shutdown_or_a_gap_the_backlog_fills_is_no_silence() -> None:
    shut = Facts()
    shut.heartbeats(at(9), at(10))
    shut.shutdown(at(10, 1))
    assert evaluate(SILENT, shut, end=at(15)) == []

    backlog = Facts()
    backlog.heartbeats(at(9), at(10))
    backlog.heartbeats(at(10, 1), at(14), received=at(14))  # the network was down; the outbox kept them
    assert evaluate(SILENT, backlog, end=at(14)) == []


def test_a_silence_that_ends_with_the_same_boot_counts_and_with_a_new_boot_only_after_it() -> None:
    same = Facts()
    same.heartbeats(at(9), at(10))
    same.heartbeats(at(11), at(11, 30))
    found = evaluate(SILENT, same, end=at(11, 30))
    assert [(v.occurred_at, v.period_end) for v in found] == [(at(10, 30), at(11))]

    rebooted = Facts()
    rebooted.heartbeats(at(9), at(10))
    rebooted.boot(at(11))  # the power strip was switched off and on: no shutdown reported
    rebooted.heartbeats(at(11, 1), at(11, 30))
    assert evaluate(SILENT, rebooted, end=at(11, 30)) == []
