"""Benchmark: durable ingest of one controller process against a raw gRPC echo server, in one run.

Both servers get the same load: ``--agents`` enrolled workstations (real certificates) sending
Reports back to back (closed loop) over mutual TLS, with the simulator's fact mix
(:mod:`bench.simulate`), for ``--seconds`` each. The echo server is a plain Python ``grpc.server`` with
the controller's own TLS settings and certificate that parses each Report and answers at once —
what a gRPC service costs with no work behind it. The controller stores every fact (committed
before the answer) and its rules judge them after the answer, off the acknowledgement path.

The controller runs with its per-agent rate limits off (they would cap a closed loop, which is
their job). Printed: reports/s and facts/s of each, the ratio controller/echo (target ≥ 0.60), ack latency
p50/p99, and the controller's CPU; then the controller's evaluation backlog at the end of its load (agents
with facts the rules have not judged yet) and how long after the load the rules took to judge every fact
(:func:`simulate.catch_up`, waiting at most ``--catch-up-timeout`` seconds). A fast ack with a backlog that
never drains is not ingest the controller can sustain. ``--db`` runs the controller on PostgreSQL instead
of SQLite.

    python bench/ingest.py --agents 32 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

import simulate  # noqa: E402
from simulate import Identity, percentile  # noqa: E402

from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402


class Echo(agent_pb2_grpc.AgentServiceServicer):
    def Report(self, request: agent_pb2.ReportRequest, context: grpc.ServicerContext) -> agent_pb2.ReportResponse:
        last = request.facts[-1].sequence if request.facts else 0
        return agent_pb2.ReportResponse(acknowledged_sequence=last, policy_version="echo")


def _echo_main(pki: Path, port_queue: mp.Queue) -> None:  # type: ignore[type-arg]
    credentials = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(), require_client_auth=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", 4 * 1024 * 1024)])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(Echo(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    port_queue.put(port)
    server.wait_for_termination()


def load(address: str, ca: bytes, identities: list[Identity], seconds: float, clients: int,
         pid: int) -> dict[str, float]:
    """Closed-loop load from ``clients`` processes for ``seconds`` (after 3 s of warm-up).

    ``ended`` in the figures is when the load stopped (monotonic seconds), to time what follows it.
    """
    watch = simulate.ControllerWatch(pid)
    watch.start()
    options = {"interval": 0.0, "duration": seconds, "warmup": 3.0, "game_share": 0.002, "after_hours": 0.0}
    context = mp.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=simulate._client_main, args=(
        address, ca, identities[i::clients], {**options, "seed": i}, queue)) for i in range(clients)]
    for worker in workers:
        worker.start()
    began = time.monotonic() + 3.0
    results = [queue.get() for _ in workers]
    ended = time.monotonic()
    for worker in workers:
        worker.join()
    watch.stop()
    latencies = [v for r in results for v in r.latencies_ms]
    errors = sum(sum(r.errors.values()) for r in results)
    cpu, _ = watch.between(began, ended)
    span = ended - began
    return {"reports_per_s": len(latencies) / span, "facts_per_s": sum(r.facts for r in results) / span,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99), "errors": errors,
            "cpu_percent": cpu, "ended": ended}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=32, help="workstations sending back to back")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per server")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--db", default=None, help="controller database URL (default: SQLite)")
    parser.add_argument("--catch-up-timeout", type=float, default=300.0,
                        help="seconds to wait after the load for the rules to judge every fact")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="cg-ingest-"))
    # The per-agent rate limits would cap a closed loop at a few reports per agent: off, to measure ingest.
    unlimited = {"COUNTERGUARD_AGENT_REPORTS_PER_SECOND": "0", "COUNTERGUARD_AGENT_FACTS_PER_SECOND": "0"}
    controller = simulate.start_controller(folder / "controller", args.db, 1, unlimited)
    echo = None
    try:
        tokens = simulate.make_tokens(folder / "controller", args.db, 1, args.agents)
        identities = asyncio.run(simulate.enrol_all(f"127.0.0.1:{controller.enroll_port}", controller.ca, tokens,
                                                    args.agents))
        context = mp.get_context("spawn")
        ports = context.Queue()
        echo = context.Process(target=_echo_main, args=(folder / "controller" / "pki", ports), daemon=True)
        echo.start()
        echo_port = ports.get(timeout=30)
        echo_figures = load(f"127.0.0.1:{echo_port}", controller.ca, identities, args.seconds, args.clients,
                            echo.pid or 0)
        ingest = load(f"127.0.0.1:{controller.port}", controller.ca, identities, args.seconds, args.clients,
                      controller.process.pid)
        engine = simulate.backlog_engine(simulate.database_url(folder / "controller", args.db))
        try:
            backlog_at_end, caught_up_s = simulate.catch_up(engine, ingest["ended"], args.catch_up_timeout)
        finally:
            engine.dispose()
    finally:
        controller.stop()
        if echo is not None:
            echo.terminate()
        shutil.rmtree(folder, ignore_errors=True)

    store = "PostgreSQL" if args.db else "SQLite"
    for name, f in (("echo server (no work)", echo_figures), (f"controller ({store}, durable)", ingest)):
        print(f"{name:32} {f['reports_per_s']:8.1f} reports/s {f['facts_per_s']:9.1f} facts/s  "
              f"p50 {f['p50_ms']:6.1f} ms  p99 {f['p99_ms']:6.1f} ms  errors {f['errors']:.0f}  "
              f"server CPU {f['cpu_percent']:.0f} % of one core")
    ratio = ingest["reports_per_s"] / echo_figures["reports_per_s"] if echo_figures["reports_per_s"] else 0.0
    print(f"ratio controller / echo: {ratio:.2f} (target >= 0.60) with {args.agents} workstations in a closed loop")
    caught_up = (f"caught up {caught_up_s} s after it" if caught_up_s is not None else
                 f"NOT caught up within {args.catch_up_timeout:.0f} s")
    print(f"evaluation backlog at the end of the controller's load: {backlog_at_end} agents; {caught_up}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
