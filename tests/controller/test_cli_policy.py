"""``counterguard policy …`` run in-process the way an admin runs it, against both database back ends."""

from __future__ import annotations

import getpass
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from policies import DEFAULT_POLICY, EXAMPLES
from tests.controller.cli_run import run

Cli = Callable[..., tuple[int, str, str]]
COUNTERGUARD = Path(sys.executable).with_name("counterguard")

BAD = """\
id: bad
version: "1"
name: Bad
timetable:
  periods: [{start: "09:00", end: "12:00"}]
rules:
  - id: games
    kind: forbidden_program
    ref: R11.6
    title: 游戏
    categories: [gmae]
    colour: red
"""

FACTS = """\
agent: agent-1
facts:
  - sequence: 1
    observedAt: "2026-11-02T02:00:00Z"   # Monday 10:00 in Shanghai
    processStarted:
      process:
        pid: 4242
        name: QQGame.exe
        executable: 'C:\\Program Files (x86)\\Tencent\\QQGame\\QQGame.exe'
        username: zhang
        startedAt: "2026-11-02T02:00:00Z"
"""


@pytest.fixture
def cli(tmp_path: Path, database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]) -> Cli:
    def invoke(*args: str) -> tuple[int, str, str]:
        return run(capsys, "--data-dir", str(tmp_path / "admin"), "--db", database_url, *args)

    return invoke


@pytest.fixture
def offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The CLI with no database given: commands that need none must not create one."""

    def invoke(*args: str) -> tuple[int, str, str]:
        return run(capsys, "--data-dir", str(tmp_path / "nodb"), *args)

    return invoke


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- validate


def test_validate_a_shipped_policy(offline: Cli, tmp_path: Path) -> None:
    code, out, err = offline("policy", "validate", str(DEFAULT_POLICY))

    assert (code, err) == (0, "")
    assert out == f"{DEFAULT_POLICY}: valid — policy counterguard-default version 2026.2, 13 rules, 51 catalogue entries\n"
    assert not (tmp_path / "nodb").exists()


def test_validate_prints_every_problem_with_its_line_and_field(offline: Cli, bad_file: Path) -> None:
    code, out, err = offline("policy", "validate", str(bad_file))

    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{bad_file}:11: rules[0].categories[0]: 'gmae' is not one of game, video, music, shopping, chat, stock, office, business",
        f"{bad_file}:12: rules[0].colour: unknown field 'colour' (known: id, kind, ref, title, enabled, when, per, categories, "
        "sources, mode, grace_minutes, informational, attribute_to_owner, condition, conditions, penalty, notice)",
        f"error: {bad_file} is not a valid policy (2 problems)",
    ]


def test_validate_a_missing_file(offline: Cli, tmp_path: Path) -> None:
    code, _, err = offline("policy", "validate", str(tmp_path / "nowhere.yaml"))

    assert code == 1 and "nowhere.yaml: cannot read the file" in err


# ----------------------------------------------------------------------------- apply, show, history


def test_apply_show_and_history(cli: Cli) -> None:
    code, out, err = cli("policy", "apply", str(EXAMPLES / "r3-summer.yaml"), "--by", "王科长")
    assert (code, err) == (0, "")
    assert out.startswith("policy r3-summer version 2026.1 (sha256 ") and "is now active" in out

    code, out, err = cli("policy", "apply", str(EXAMPLES / "r3-summer.yaml"))
    assert (code, out, err) == (0, "policy r3-summer version 2026.1 is already active; nothing changed\n", "")

    code, out, err = cli("policy", "show", "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["record"]["policy_id"] == "r3-summer" and shown["record"]["applied_by"] == "王科长"
    assert shown["record"]["source"] == "r3-summer.yaml" and "content" not in shown["record"]
    assert shown["policy"]["timetable"]["seasonal"][0]["periods"][1] == {"start": "14:30:00", "end": "18:30:00"}

    code, out, err = cli("policy", "show")
    assert (code, err) == (0, "")
    for text in ("r3-summer version 2026.1", "王科长", "Asia/Shanghai", "14:30–18:30", "stock-tr", "R3 7(3)"):
        assert text in out

    code, out, _ = cli("policy", "history", "--json")
    assert code == 0
    assert [(h["policy_id"], h["applied_by"], h["active"]) for h in json.loads(out)] == [("r3-summer", "王科长", True)]


def test_apply_by_default_names_the_login(cli: Cli) -> None:
    code, _, err = cli("policy", "apply", str(DEFAULT_POLICY))
    assert (code, err) == (0, "")

    code, out, _ = cli("policy", "history", "--json")
    assert json.loads(out)[0]["applied_by"] == getpass.getuser()


def test_apply_a_new_version_then_roll_back(cli: Cli, tmp_path: Path) -> None:
    changed = tmp_path / "default-2.yaml"
    changed.write_text(
        DEFAULT_POLICY.read_text(encoding="utf-8").replace('version: "2026.2"', 'version: "2026.3"'), encoding="utf-8"
    )
    for path in (DEFAULT_POLICY, changed, DEFAULT_POLICY):
        assert cli("policy", "apply", str(path), "--by", "admin")[0] == 0

    code, out, _ = cli("policy", "history")
    assert code == 0 and (out.count("2026.2"), out.count("2026.3")) == (2, 1)
    history = json.loads(cli("policy", "history", "--json")[1])
    assert [h["version"] for h in history] == ["2026.2", "2026.3", "2026.2"]


def test_apply_an_invalid_file_stores_nothing(cli: Cli, bad_file: Path) -> None:
    code, out, err = cli("policy", "apply", str(bad_file))

    assert (code, out) == (1, "")
    assert f"{bad_file}:11: rules[0].categories[0]" in err
    assert json.loads(cli("policy", "history", "--json")[1]) == []


def test_apply_changed_content_under_the_same_version_is_refused(cli: Cli, tmp_path: Path) -> None:
    assert cli("policy", "apply", str(DEFAULT_POLICY))[0] == 0
    changed = tmp_path / "default.yaml"
    changed.write_text(DEFAULT_POLICY.read_text(encoding="utf-8").replace("grace_minutes: 30", "grace_minutes: 45"), encoding="utf-8")

    code, out, err = cli("policy", "apply", str(changed))

    assert (code, out) == (1, "")
    assert "error: policy counterguard-default version 2026.2 was already applied" in err
    assert "give the changed file a new version" in " ".join(err.split())


def test_show_without_an_active_policy(cli: Cli) -> None:
    code, out, err = cli("policy", "show")

    assert (code, out) == (1, "")
    assert "error: no policy is active" in err


def test_show_an_active_policy_this_controller_cannot_use(cli: Cli, engine: Engine) -> None:
    assert cli("policy", "apply", str(DEFAULT_POLICY))[0] == 0
    with engine.begin() as conn:  # as if applied by a newer controller that knows more fields
        conn.execute(text("UPDATE policy_version SET content = content || :extra"), {"extra": "future_field: 1\n"})

    code, out, err = cli("policy", "show")

    assert (code, out) == (1, "")
    assert "error: the active policy counterguard-default@2026.2 cannot be used by this controller:" in err
    assert "future_field: unknown field 'future_field'" in err


# ----------------------------------------------------------------------------- test


def test_test_reports_a_malformed_facts_file_by_line(offline: Cli, tmp_path: Path) -> None:
    facts = tmp_path / "facts.yaml"
    facts.write_text(FACTS.replace("processStarted:", "procesStarted:"), encoding="utf-8")

    code, out, err = offline("policy", "test", str(DEFAULT_POLICY), "--facts", str(facts))

    assert (code, out) == (1, "")
    assert f"{facts}:3: facts[0]:" in err and "procesStarted" in err


def test_test_needs_a_valid_policy_first(offline: Cli, bad_file: Path, tmp_path: Path) -> None:
    facts = tmp_path / "facts.yaml"
    facts.write_text(FACTS, encoding="utf-8")

    code, _, err = offline("policy", "test", str(bad_file), "--facts", str(facts))

    assert code == 1 and "is not a valid policy" in err


def test_test_prints_the_violations_the_rules_engine_would_give(offline: Cli, tmp_path: Path) -> None:
    pytest.importorskip("controller.rules.evaluate")
    facts = tmp_path / "facts.yaml"
    facts.write_text(FACTS, encoding="utf-8")
    as_json = tmp_path / "facts.json"
    as_json.write_text(json.dumps([{"agent": "agent-2", "facts": []}]), encoding="utf-8")

    code, out, err = offline("policy", "test", str(DEFAULT_POLICY), "--facts", str(facts), "--json")

    assert (code, err) == (0, "")
    candidates = json.loads(out)
    hit = next(c for c in candidates if c["rule_id"] == "games-video-music")
    assert hit["ref"] == "R11.6; R9 7(2)14" and hit["agent_id"] == "agent-1"

    code, out, err = offline("policy", "test", str(DEFAULT_POLICY), "--facts", str(facts))
    assert (code, err) == (0, "") and "games-video-music" in out

    code, out, err = offline("policy", "test", str(DEFAULT_POLICY), "--facts", str(as_json))
    assert (code, err) == (0, "") and out.startswith("no violations: 0 facts checked")


# ----------------------------------------------------------------------------- serve


def test_serve_applies_the_default_policy_on_a_fresh_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "served"
    process = subprocess.Popen(
        [str(COUNTERGUARD), "--data-dir", str(data_dir), "serve", "--listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("counterguard controller listening"), line
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "no policy was active: applied the default policy counterguard-default@2026.2" in err

    code, out, _ = run(capsys, "--data-dir", str(data_dir), "policy", "history", "--json")
    assert code == 0
    assert [(h["policy_id"], h["applied_by"], h["source"]) for h in json.loads(out)] == [
        ("counterguard-default", "counterguard serve", "default.yaml")
    ]
