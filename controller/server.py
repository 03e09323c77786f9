"""The controller's gRPC server: two TLS ports on one ``grpc.Server``, health, reflection, limits.

grpcio cannot ask for an *optional* client certificate, so the server listens twice:
``enroll_listen`` with server-authenticated TLS (Enroll, health and reflection answer there; the
other methods find no client certificate and refuse) and ``listen`` with mutual TLS against our
CA (Report, FetchPolicy). :func:`serve` is what ``counterguard serve`` runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.engine import Engine

from controller.agents import AgentDirectory
from controller.clock import Clock, clock_from, utc_now
from controller.config import Settings
from controller.enrollment import EnrollmentService
from controller.errors import CounterGuardError
from controller.grpc_server import SERVICE_NAME, AfterIngest, AgentServicer, BuiltinPolicy, Ingest, PolicyProvider
from controller.limits import RateLimitInterceptor, RateLimits
from controller.load import ReportLoad, TimedExecutor
from controller.metrics import (
    INGEST_GROUP,
    InstrumentedIngest,
    InstrumentedRules,
    MetricsInterceptor,
    MetricsServer,
    serve_metrics,
)
from controller.pki import ServerPKI
from protos.counterguard.v1 import agent_pb2_grpc

if TYPE_CHECKING:
    from controller.policy.store import PolicyStore

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 5.0


@dataclass
class RunningServer:
    """A built server and the ports it actually bound (useful when the settings said port 0)."""

    server: grpc.Server
    port: int
    enroll_port: int
    health: health.HealthServicer

    def start(self) -> None:
        self.server.start()

    def stop(self, grace: float | None = SHUTDOWN_GRACE_SECONDS) -> None:
        """Report NOT_SERVING, let running calls finish for ``grace`` seconds, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def _bind_failure(address: str) -> str:
    """Why ``address`` cannot be listened on, found by trying a plain socket (gRPC does not say)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, socket.gaierror) as exc:
        return f"cannot listen on {address}: not a valid host:port address ({exc})"
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                return f"cannot listen on {address}: {(exc.strerror or str(exc)).lower()}"
    return f"cannot listen on {address}"


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials) -> int:
    try:
        port = int(server.add_secure_port(address, credentials))
    except RuntimeError:
        port = 0
    if port == 0:
        raise CounterGuardError(_bind_failure(address))
    return port


def build_server(
    settings: Settings,
    engine: Engine,
    pki: ServerPKI,
    clock: Clock = utc_now,
    *,
    ingest: Ingest | None = None,
    policies: PolicyProvider | None = None,
    rules: AfterIngest | None = None,
    load: ReportLoad | None = None,
) -> RunningServer:
    """Bind both ports and mount AgentService, health and reflection; the caller starts it.

    ``load`` (default: from the settings) refuses Reports while too many calls wait for a thread.
    """
    limits = RateLimits.from_settings(settings)
    load = load or ReportLoad.from_settings(settings)
    server = grpc.server(
        load.watch(TimedExecutor(max_workers=settings.max_workers, thread_name_prefix="grpc")),
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            # gRPC sets SO_REUSEPORT by default: a second controller would silently share the port.
            # Only worker processes, or controllers started with --reuse-port on purpose, share it.
            ("grpc.so_reuseport", 1 if settings.reuse_port or settings.workers > 1 else 0),
        ],
        # Outermost first: every call is measured, rate-limited ones too.
        interceptors=(MetricsInterceptor(), RateLimitInterceptor(limits, load=load)),
    )
    key_pair = [(pki.server_key_pem, pki.server_cert_pem)]
    try:
        port = _bind(
            server,
            settings.listen,
            grpc.ssl_server_credentials(key_pair, root_certificates=pki.ca_cert_pem, require_client_auth=True),
        )
        enroll_port = _bind(server, settings.enroll_listen, grpc.ssl_server_credentials(key_pair))
    except CounterGuardError:
        server.stop(None)
        raise

    if ingest is None:
        from controller.ingest import IngestLimits, IngestService

        ingest = IngestService(
            engine, clock=clock, limits=IngestLimits(max_facts_per_batch=settings.max_facts_per_batch),
            on_group=INGEST_GROUP.observe,
        )
    servicer = AgentServicer(
        enrollment=EnrollmentService(engine, pki, clock, settings.client_cert_days),
        directory=AgentDirectory(engine, clock),
        ingest=InstrumentedIngest(ingest),
        policies=policies or BuiltinPolicy(),
        report_port=port,
        report_host=settings.advertise_host,
        rules=rules,
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]

    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    reflection.enable_server_reflection((SERVICE_NAME, health_name, reflection.SERVICE_NAME), server)
    return RunningServer(server=server, port=port, enroll_port=enroll_port, health=health_servicer)


def _shown(address: str, port: int) -> str:
    """``address`` with the port actually bound (differs when the settings asked for port 0)."""
    host, _, _ = address.rpartition(":")
    return f"{host}:{port}"


def ca_cert_path(settings: Settings) -> Path:
    """Where the CA certificate agents must trust lives (the admin's, or ours under the data folder)."""
    return Path(settings.ca_cert) if settings.ca_cert else settings.pki_dir / "ca.pem"


def listening_line(settings: Settings, port: int, enroll_port: int, workers: int = 1) -> str:
    """The one start-up line: both addresses and the CA for people, then the same as JSON for scripts."""
    listen, enroll = _shown(settings.listen, port), _shown(settings.enroll_listen, enroll_port)
    ca = str(ca_cert_path(settings))
    facts = {
        "listen": listen,
        "port": port,
        "enroll_listen": enroll,
        "enroll_port": enroll_port,
        "ca_cert": ca,
        "workers": workers,
    }
    processes = f" in {workers} worker processes" if workers > 1 else ""
    return (
        f"counterguard controller listening{processes}: agents (mutual TLS) on {listen}, enrolment (TLS) on {enroll}; "
        f"CA certificate {ca} {json.dumps(facts)}"
    )


def _policy_store(engine: Engine, clock: Clock) -> PolicyStore:
    """The one policy store of this process, shared by FetchPolicy and the rules engine (so the active
    policy is parsed once); the shipped default is applied on a fresh database."""
    from controller.policy.store import PolicyStore
    from policies import DEFAULT_POLICY

    store = PolicyStore(engine, clock)
    applied = store.ensure_default(DEFAULT_POLICY, applied_by="counterguard serve")
    if applied is not None:
        log.info("no policy was active: applied the default policy %s", applied.label)
    store.active()
    return store


FAKE_NOW_VARIABLE = "COUNTERGUARD_FAKE_NOW"


def _clock_for_tests(clock: Clock) -> Clock:
    """A test hook, never for production: with ``$COUNTERGUARD_FAKE_NOW`` set to an ISO time with an offset
    (in the past: certificates are made with it), the controller's clock starts there and runs at normal
    speed, so end-to-end tests and benchmarks can be in working hours; unset, ``clock`` is used."""
    value = os.environ.get(FAKE_NOW_VARIABLE, "").strip()
    if not value:
        return clock
    problem = f"${FAKE_NOW_VARIABLE} {value!r} is not an ISO time with an offset"
    try:
        start = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CounterGuardError(problem) from None
    if start.tzinfo is None:
        raise CounterGuardError(problem)
    log.warning("test hook $%s: the controller's clock starts at %s", FAKE_NOW_VARIABLE, start.isoformat())
    return clock_from(start)


@dataclass(frozen=True)
class Prepared:
    """What a controller process needs before it can listen: the migrated database, the certificates and
    the policy store (with a policy in force)."""

    engine: Engine
    pki: ServerPKI
    store: PolicyStore


def prepare(settings: Settings, clock: Clock) -> Prepared:
    """Migrate the database, create or read the certificates, make sure a policy is in force.

    Done once by ``serve`` before any worker starts; a worker then only reads what is there.
    """
    from controller.migrate import open_database
    from controller.pki import load_or_create_pki

    engine = open_database(settings.resolved_database_url)
    try:
        try:
            pki = load_or_create_pki(settings, clock())
        except OSError as exc:
            raise CounterGuardError(f"cannot read or create the certificates under {settings.pki_dir}: {exc}") from None
        return Prepared(engine, pki, _policy_store(engine, clock))
    except BaseException:
        engine.dispose()
        raise


class StopRequest(threading.Event):
    """Set when the process is asked to stop; ``reason`` says by what (e.g. ``received SIGTERM``)."""

    reason = "asked to stop"

    def request(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


def run_until(
    settings: Settings,
    prepared: Prepared,
    clock: Clock,
    stop: StopRequest,
    on_ready: Callable[[RunningServer], None],
    *,
    sweep: bool = True,
) -> None:
    """Listen (and sweep, when ``sweep``) until ``stop`` is set, then stop gracefully.

    ``on_ready`` is called once both ports accept calls.
    """
    from controller.evaluation import EvaluationQueue
    from controller.policy.provider import StoredPolicyProvider
    from controller.rules.sweep import Sweeper

    load = ReportLoad.from_settings(settings)
    rules = InstrumentedRules(_rules_service(settings, prepared, clock))
    evaluations = EvaluationQueue(rules, threads=settings.rules_evaluation_threads,
                                  wait_seconds=settings.rules_evaluation_wait_seconds, clock=clock,
                                  scan_seconds=10.0 if sweep else 0.0,  # one scanner per host, like the sweep
                                  pressed=load.pressed)
    try:
        running = build_server(settings, prepared.engine, prepared.pki, clock,
                               policies=StoredPolicyProvider(prepared.store, clock=clock), rules=evaluations,
                               load=load)
    except BaseException:
        rules.close()  # a rules process started for nothing stops
        raise
    sweeper = Sweeper(rules, settings.rules_sweep_interval_seconds) if sweep else None
    try:
        evaluations.start()
        running.start()
        if sweeper is not None:
            sweeper.start()
        on_ready(running)
        while not stop.wait(1.0):
            pass
        log.info("%s; stopping (running calls get %.0f s to finish)", stop.reason, SHUTDOWN_GRACE_SECONDS)
    finally:
        if sweeper is not None:
            sweeper.stop()
        running.stop(SHUTDOWN_GRACE_SECONDS)
        evaluations.stop(SHUTDOWN_GRACE_SECONDS)
        rules.close()


def _rules_service(settings: Settings, prepared: Prepared, clock: Clock) -> Any:
    """The rules service of this process: in a niced child process, or here (see ``rules_evaluation_process``)."""
    from controller.rules.service import RulesService

    if not settings.evaluates_in_a_process():
        return RulesService(prepared.engine, prepared.store, clock)
    from controller.evaluator import EvaluatorProcess

    # A thread for each of the queue's evaluation threads, one for the sweep and one for the scan.
    evaluator = EvaluatorProcess(settings.resolved_database_url, clock=clock,
                                 niceness=settings.rules_evaluation_niceness,
                                 threads=settings.rules_evaluation_threads + 2, log_format=settings.log_format)
    evaluator.start()
    return evaluator


@contextmanager
def stop_on_signals(*signals: signal.Signals) -> Iterator[StopRequest]:
    """A stop request made by the first of ``signals`` (default SIGTERM and SIGINT) while the block runs."""
    stop = StopRequest()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.request(f"received {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, request_stop) for sig in signals or (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(settings: Settings, clock: Clock = utc_now) -> int:
    """Run the controller until SIGTERM or SIGINT, then stop gracefully; returns the exit code (0).

    With ``settings.workers`` above 1, this process supervises that many worker processes instead
    (see :mod:`controller.supervisor`).
    """
    if settings.workers < 1:
        raise CounterGuardError(f"the number of worker processes must be at least 1, got {settings.workers}")
    settings.evaluates_in_a_process()  # a wrong choice fails here, not in a worker
    RateLimits.from_settings(settings)  # so do wrong limits, before the database is migrated or created
    ReportLoad.from_settings(settings)
    clock = _clock_for_tests(clock)
    if settings.workers > 1:
        from controller.supervisor import supervise

        return supervise(settings, clock)
    prepared = prepare(settings, clock)
    metrics: MetricsServer | None = None
    try:
        if settings.metrics_port:
            metrics = serve_metrics(settings.metrics_host, settings.metrics_port)
        with stop_on_signals() as stop:
            run_until(settings, prepared, clock, stop,
                      lambda running: print(listening_line(settings, running.port, running.enroll_port), flush=True))
        print("counterguard controller stopped", flush=True)
        return 0
    finally:
        if metrics is not None:
            metrics.stop()
        prepared.engine.dispose()
