"""``counterguard asset …`` run the way an admin runs it, on each back end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from controller.policy.store import PolicyStore
from controller.rules.service import RulesService
from policies import DEFAULT_POLICY
from tests.controller.assets.centre import CARD_READER, KEYBOARD, Reporter, add_agent, add_org, pc
from tests.controller.cli_run import run
from tests.controller.rules.builders import local


@pytest.fixture
def cli(tmp_path: Path, database_url: str, engine: Engine, clock: Any, capsys: pytest.CaptureFixture[str]) -> Any:
    add_org(engine, clock)
    add_agent(engine, clock, "ag-1", "W01", hostname="pc-w01")

    def invoke(*args: str) -> tuple[int, str, str]:
        return run(capsys, "--data-dir", str(tmp_path / "admin"), "--db", database_url, *args)

    def json_of(*args: str) -> Any:
        code, out, err = invoke(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    invoke.json = json_of  # type: ignore[attr-defined]
    return invoke


def test_register_sign_show_list_and_retire(cli: Any) -> None:
    code, out, err = cli("asset", "register", "ZX-PC-01", "--kind", "pc", "--window", "W01", "--agent", "ag-1",
                         "-d", "联想 M720", "--by", "管理员")
    assert (code, err) == (0, "")
    assert out.strip() == "Asset ZX-PC-01 (pc) registered at window W01 (tax), recognised by agent ag-1."
    code, out, _ = cli("asset", "sign", "ZX-PC-01", "--by", "张三", "--on", "2026-11-01", "--note", "首次领用")
    assert out.strip() == "Asset ZX-PC-01 signed for by 张三 (tax) on 2026-11-01."
    cli.json("asset", "register", "ZX-DK-01", "--kind", "desk", "--window", "W03")

    listed = cli.json("asset", "list", "--unit", "tax")
    assert [(a["tag"], a["signed_by"], a["signed_on"]) for a in listed] == [("ZX-PC-01", "张三", "2026-11-01")]
    code, out, _ = cli("asset", "list")
    assert code == 0 and "Assets (2)" in out and "ZX-DK-01" in out
    shown = cli.json("asset", "show", "ZX-PC-01")
    assert [e["action"] for e in shown["history"]] == ["registered", "signed"]
    assert shown["history"][0]["recorded_by"] == "管理员"
    code, out, _ = cli("asset", "show", "ZX-PC-01")
    assert code == 0 and "领用签字" in out and "首次领用" in out and "History" in out

    code, out, _ = cli("asset", "retire", "ZX-DK-01", "--reason", "报废")
    assert out.strip() == "Asset ZX-DK-01 retired: 报废."
    assert [a["tag"] for a in cli.json("asset", "list")] == ["ZX-PC-01"]
    assert [a["tag"] for a in cli.json("asset", "list", "--all", "--kind", "desk")] == ["ZX-DK-01"]


def test_import_good_and_bad_files(cli: Any, tmp_path: Path) -> None:
    good = tmp_path / "资产.csv"
    good.write_bytes("tag,kind,window,description\nZX-1,phone,W01,电话\nZX-2,chair,W01,椅子\n".encode("gb18030"))
    bad = tmp_path / "bad.csv"
    bad.write_text("\ufefftag,kind,window\nZX-3,desk,W01\nZX-1,desk,W77\n", encoding="utf-8")

    code, out, _ = cli("asset", "import", str(good))
    assert (code, out.strip()) == (0, f"Imported 2 assets from {good}.")
    code, out, err = cli("asset", "import", str(bad))
    assert (code, out) == (1, "")
    assert f"error: {bad}: 1 bad row, nothing imported:" in err
    assert f"{bad}:3: tag: ZX-1 is already in the register" in err
    assert f"{bad}:3: window: no window 'W77'" in err
    assert "Traceback" not in err
    assert [a["tag"] for a in cli.json("asset", "list")] == ["ZX-1", "ZX-2"]


def test_check_reports_what_the_agents_see(cli: Any, engine: Engine, clock: Any) -> None:
    Reporter(engine, clock).inventory("ag-1", pc(devices=[CARD_READER, KEYBOARD]))
    cli.json("asset", "register", "ZX-PC-01", "--kind", "pc", "--window", "W01", "--agent", "ag-1")
    cli.json("asset", "register", "ZX-SC-01", "--kind", "scanner", "--window", "W01", "--usb", "04a9:1909:SC-1")

    report = cli.json("asset", "check")
    assert [(u["kind"], u["register_with"]) for u in report["unregistered"]] == [
        ("card_reader", "--usb 076b:3021:CR-7781")]
    assert [(m["tag"], m["last_seen_at"]) for m in report["missing"]] == [("ZX-SC-01", None)]

    code, out, _ = cli("asset", "check")
    assert code == 0
    assert "1 workstation reporting, 2 discoverable assets: 1 unregistered, 1 not seen, 0 at another window." in out
    assert "Not in the register" in out and "card_reader" in out  # a table: long cells wrap at 80 columns
    assert "Registered, not seen" in out and "ZX-SC-01" in out and "never" in out


def test_maintain_withdraws_the_hardware_violation_it_covers(cli: Any, engine: Engine, clock: Any) -> None:
    store = PolicyStore(engine, clock)
    store.apply(DEFAULT_POLICY.read_text(encoding="utf-8"), "default.yaml", "test")
    reporter = Reporter(engine, clock, RulesService(engine, store, clock))
    clock.now = local(2026, 11, 2, 9, 0)
    reporter.inventory("ag-1", pc(disk_serial="S1"))
    clock.now = local(2026, 11, 3, 9, 0)
    reporter.inventory("ag-1", pc(disk_serial="S2"))
    cli.json("asset", "register", "ZX-PC-01", "--kind", "pc", "--window", "W01", "--agent", "ag-1")
    [violation] = cli.json("violations", "list", "--rule", "hardware-changed")
    assert violation["status"] == "open"

    code, out, err = cli("asset", "maintain", "ZX-PC-01", "--from", "2026-11-02 15:00", "--to", "2026-11-02 17:00",
                         "--note", "更换硬盘 王工")

    assert code == 0, err
    assert out.startswith("Maintenance 1 recorded for asset ZX-PC-01 and for workstation ag-1.")
    assert "1 withdrawn violation" in out
    [violation] = cli.json("violations", "list", "--rule", "hardware-changed")
    assert (violation["status"], violation["status_reason"]) == ("withdrawn", "maintenance recorded")
    [record] = cli.json("maintenance", "list")
    assert (record["agent_id"], record["note"]) == ("ag-1", "ZX-PC-01: 更换硬盘 王工")
    assert record["starts_at"].startswith("2026-11-02T07:00:00")  # 15:00 in Shanghai


def test_errors_are_one_sentence(cli: Any) -> None:
    cli.json("asset", "register", "ZX-1", "--kind", "desk", "--window", "W01")
    for args, message in (
        (("asset", "show", "ZX-404"), "no asset 'ZX-404'; see `counterguard asset list`"),
        (("asset", "register", "ZX-1", "--kind", "desk", "--window", "W01"), "tag: ZX-1 is already in the register"),
        (("asset", "register", "ZX-2", "--kind", "sofa", "--window", "W01"), "kind: 'sofa' is not one of"),
        (("asset", "register", "ZX-2", "--kind", "scanner", "--window", "W01", "--usb", "zz:1"),
         "usb: 'zz:1' is not VID:PID or VID:PID:SERIAL"),
        (("asset", "register", "ZX-2", "--kind", "desk", "--window", "W77"), "window: no window 'W77'"),
        (("asset", "sign", "ZX-1", "--by", "李四", "--on", "11/02"), "on: '11/02' is not a date"),
        (("asset", "maintain", "ZX-1", "--from", "2026-11-02", "--to", "tomorrow", "--note", "x"),
         "--to 'tomorrow' is not a date"),
        (("asset", "import", "/nonexistent/assets.csv"), "/nonexistent/assets.csv: no such file"),
        (("asset", "list", "--kind", "sofa"), "kind: 'sofa' is not one of"),
    ):
        code, out, err = cli(*args)
        assert code == 1 and out == "", args
        assert message in err and err.startswith("error: ") and "Traceback" not in err, (args, err)
        assert err.count("\n") == 1, err  # one line
