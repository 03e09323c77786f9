"""Benchmark: the agent's full inventory collection against FusionInventory, and the agent's steady RSS.

Prints figures measured in this run only:

* the agent's full collection (hardware/peripheral inventory + installed software + running
  processes + sessions), in the agent's own process (how the service does it) and as a fresh
  process (interpreter start and imports included);
* ``fusioninventory-inventory`` on the same machine, when installed (Debian package
  ``fusioninventory-agent``), with the ratio and which of its sections we cover;
* the steady RSS of a real ``counterguard-agent run`` reporting to a real controller over mTLS.

Targets (issue "Foundation"): full collection ≤ 0.15 × FusionInventory's wall time; agent
steady RSS ≤ 40 MiB. Usage: ``python bench/inventory.py [--runs N] [--rss-seconds S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

COLLECT = """
import time
t0 = time.perf_counter()
from agent.collectors.inventory import collect_inventory
from agent.collectors.software import collect_software
from agent.collectors.processes import ProcessTracker
from agent.collectors.sessions import SessionTracker
inv = collect_inventory(); sw = collect_software(); ps = ProcessTracker().snapshot(); ss = SessionTracker().snapshot()
print(len(sw), len(ps.processes))
"""

# FusionInventory's sections and where the agent reports the same information.
SECTION_MAP = {
    "BIOS": "inventory.system", "HARDWARE": "inventory.system/os", "CPUS": "inventory.cpu",
    "MEMORIES": "inventory.memory", "STORAGES": "inventory.disks", "NETWORKS": "inventory.network_interfaces",
    "OPERATINGSYSTEM": "inventory.os", "USBDEVICES": "inventory.usb_devices", "PRINTERS": "inventory.printers",
    "CONTROLLERS": "inventory.pci_devices", "DRIVES": "inventory.filesystems", "LOCAL_USERS": "inventory.local_users",
    "LOCAL_GROUPS": "inventory.local_groups", "SOFTWARES": "software_snapshot", "PROCESSES": "process_snapshot",
    "USERS": "session_snapshot",
}
# Sections deliberately not collected, and why.
NOT_COLLECTED = {
    "ENVS": "environment variables of the agent process: no compliance value, may hold secrets",
    "FIREWALL": "firewall service state: not a rule in RULES.md yet",
    "ACCESSLOG": "FusionInventory's own run log", "VERSIONCLIENT": "FusionInventory's own version",
    "VERSIONPROVIDER": "FusionInventory's own build", "ANTIVIRUS": "antivirus comes with the rules change",
}


def in_process(runs: int) -> list[float]:
    from agent.collectors.inventory import collect_inventory
    from agent.collectors.processes import ProcessTracker
    from agent.collectors.sessions import SessionTracker
    from agent.collectors.software import collect_software

    times = []
    for _ in range(runs + 1):  # the first run also reads pci.ids and warms the page cache
        t0 = time.perf_counter()
        collect_inventory(), collect_software(), ProcessTracker().snapshot(), SessionTracker().snapshot()
        times.append(time.perf_counter() - t0)
    return times


def fresh_process(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", COLLECT], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def fusion(runs: int) -> tuple[list[float], list[str]]:
    exe = shutil.which("fusioninventory-inventory")
    if not exe:
        return [], []
    times, sections = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([exe], check=True, capture_output=True).stdout
        times.append(time.perf_counter() - t0)
        content = ET.fromstring(out).find("CONTENT")
        sections = sorted({child.tag for child in content}) if content is not None else []
    return times, sections


def steady_rss(seconds: float) -> tuple[float, float, float]:
    """Run a real controller and agent for ``seconds``; return (median RSS MiB of the second half, max, CPU %)."""
    work = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    cg = [str(BIN / "counterguard"), "--data-dir", str(work / "controller")]
    controller = subprocess.Popen(
        [*cg, "serve", "--listen", "127.0.0.1:0", "--enroll-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    agent = None
    try:
        line = controller.stdout.readline() if controller.stdout else ""
        info = json.loads(line[line.index("{"):]) if "enroll_port" in line else {}
        enroll_port = info.get("enroll_port")
        if not enroll_port:
            raise SystemExit(f"could not read the controller's ports from: {line!r}")
        token = json.loads(subprocess.run([*cg, "token", "create", "--window", "BENCH", "--expires", "1h", "--json"],
                                          check=True, capture_output=True, text=True, env=env).stdout)["token"]
        state = work / "agent"
        ag = [str(BIN / "counterguard-agent"), "--state-dir", str(state)]
        subprocess.run([*ag, "enroll", "--controller", f"127.0.0.1:{enroll_port}", "--token", token,
                        "--ca-cert", str(work / "controller" / "pki" / "ca.pem")], check=True, capture_output=True, env=env)
        agent = subprocess.Popen([*ag, "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        proc = psutil.Process(agent.pid)
        samples: list[float] = []
        start = time.monotonic()
        cpu0 = proc.cpu_times()
        while time.monotonic() - start < seconds:
            samples.append(proc.memory_info().rss / 2**20)
            time.sleep(1)
        cpu1 = proc.cpu_times()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (time.monotonic() - start) * 100
        second_half = samples[len(samples) // 2:]
        return statistics.median(second_half), max(samples), cpu
    finally:
        for p in (agent, controller):
            if p is not None:
                p.terminate()
                p.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rss-seconds", type=float, default=60)
    args = parser.parse_args()

    warm = in_process(args.runs)
    cold = fresh_process(args.runs)
    fi_times, fi_sections = fusion(max(1, args.runs // 2))
    print(f"agent full collection, in the agent process: first {warm[0] * 1000:.1f} ms, then median "
          f"{statistics.median(warm[1:]) * 1000:.1f} ms over {args.runs} runs")
    print(f"agent full collection, fresh process:        median {statistics.median(cold) * 1000:.1f} ms over {args.runs} runs")
    if fi_times:
        fi = statistics.median(fi_times)
        print(f"fusioninventory-inventory:                   median {fi * 1000:.1f} ms over {len(fi_times)} runs")
        print(f"ratio (in-process / FusionInventory):  {statistics.median(warm[1:]) / fi:.3f}  (target <= 0.15); "
              f"first run {warm[0] / fi:.3f}")
        print(f"ratio (fresh process / FusionInventory): {statistics.median(cold) / fi:.3f}")
        covered = [s for s in fi_sections if s in SECTION_MAP]
        skipped = [s for s in fi_sections if s not in SECTION_MAP]
        print(f"FusionInventory sections here: {', '.join(fi_sections)}")
        print(f"  covered by the agent: {', '.join(f'{s}→{SECTION_MAP[s]}' for s in covered)}")
        for s in skipped:
            print(f"  not collected: {s} ({NOT_COLLECTED.get(s, 'not mapped')})")
    else:
        print("fusioninventory-inventory is not installed (apt-get install fusioninventory-agent): no ratio")
    median_rss, max_rss, cpu = steady_rss(args.rss_seconds)
    print(f"agent steady RSS: median {median_rss:.1f} MiB (max {max_rss:.1f} MiB) over {args.rss_seconds:.0f} s "
          f"of `counterguard-agent run` at default settings (target <= 40 MiB); CPU {cpu:.2f} % of one core")


if __name__ == "__main__":
    main()
