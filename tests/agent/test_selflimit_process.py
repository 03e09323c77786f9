"""A real agent process whose memory limit is below what it uses: it sheds, reports RESTART, re-executes itself
(same PID, a fresh start), runs at nice 10 in every thread, logs to its JSON file and shows all that in
``status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.config import AgentConfig
from protos.counterguard.v1 import facts_pb2

Health = facts_pb2.AgentHealth
REPO = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-c", "from agent.cli import main; raise SystemExit(main())"]


def wait_for(condition, timeout: float = 60.0, what: str = "the agent"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def facts(controller) -> list[facts_pb2.Fact]:
    held = controller.servicer.held
    return [held[s] for s in sorted(held)]


def status_file(config: AgentConfig) -> dict | None:
    try:
        return dict(json.loads(config.status_path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def thread_nice_values(pid: int) -> list[int]:
    values = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        values.append(int(stat.rsplit(")", 1)[1].split()[16]))  # field 19: nice
    return values


def test_over_its_memory_limit_the_agent_reports_restart_and_re_executes_itself(
        agent_config: AgentConfig, controller, enrolled, tmp_path: Path) -> None:
    state = ["--state-dir", str(agent_config.state_dir)]
    settings = {"SELF_LIMIT_RSS_MIB": "5", "SELF_LIMIT_CHECK_INTERVAL_SECONDS": "0.5",
                "SELF_LIMIT_RESTART_CHECKS": "2", "SELF_LIMIT_RESTART_MIN_UPTIME_SECONDS": "3",
                "REPORT_INTERVAL_SECONDS": "0.2"}
    env = {**os.environ, "PYTHONPATH": str(REPO), **{f"COUNTERGUARD_AGENT_{k}": v for k, v in settings.items()}}
    process = subprocess.Popen([*AGENT, *state, "run"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        first = wait_for(lambda: status_file(agent_config), what="the status file")
        assert first["pid"] == process.pid and first["shed"] == ["foreground", "software_rescan"]
        assert min(thread_nice_values(process.pid)) >= 10

        report = json.loads(subprocess.run([*AGENT, *state, "status", "--json"], env=env, cwd=tmp_path, check=True,
                                           capture_output=True, text=True).stdout)
        assert report["agent"]["running"] and report["agent"]["shed"] == ["foreground", "software_rescan"]
        assert report["agent"]["limits"]["rss_bytes"] == 5 * 1024 * 1024

        def restarted() -> bool:
            kinds = [(f.WhichOneof("kind"), f.agent_health.action) for f in facts(controller)]
            if ("agent_health", Health.ACTION_RESTART) not in kinds:
                return False
            after = kinds[kinds.index(("agent_health", Health.ACTION_RESTART)) + 1:]
            return any(kind == "process_snapshot" for kind, _ in after)  # the start-up facts again

        wait_for(restarted, what="a RESTART fact followed by a fresh start")
        again = wait_for(lambda: (s := status_file(agent_config)) and s["started_at"] != first["started_at"] and s,
                         what="the re-executed agent's status")
        assert again["pid"] == process.pid and process.poll() is None  # the same process, a new program run
        assert min(thread_nice_values(process.pid)) >= 10
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0 and "Traceback" not in stderr, stderr

    health = [f.agent_health for f in facts(controller) if f.WhichOneof("kind") == "agent_health"]
    assert [h.action for h in health[:2]] == [Health.ACTION_SHED, Health.ACTION_RESTART]
    restart = health[1]
    assert restart.rss_bytes > restart.rss_limit_bytes == 5 * 1024 * 1024
    assert restart.reason.startswith("RSS ") and restart.reason.endswith(": restarting")
    assert list(restart.shed) == ["foreground", "software_rescan"]
    boots = [f for f in facts(controller) if f.power.kind == facts_pb2.PowerEvent.KIND_BOOT]
    assert len(boots) == 1  # the same boot: a restart is not reported as one

    logged = [json.loads(line) for line in agent_config.log_path.read_text(encoding="utf-8").splitlines()]
    assert any(e["logger"] == "agent.selflimit" and e["msg"].startswith("self-limit restart") for e in logged)
    after = json.loads(subprocess.run([*AGENT, *state, "status", "--json"], env=env, cwd=tmp_path, check=True,
                                      capture_output=True, text=True).stdout)
    assert after["agent"]["running"] is False
