"""The controller's Prometheus metrics: what is measured, where it is counted, and the /metrics endpoint.

- ``counterguard_rpcs_total{method,code}`` and ``counterguard_rpc_duration_seconds{method,code}``:
  every AgentService call by its gRPC status (Report refused by a rate limit is ``RESOURCE_EXHAUSTED``),
  counted by :class:`MetricsInterceptor`, the outermost server interceptor.
- ``counterguard_facts_total{outcome}``: facts of Report calls that reached the ingest service:
  ``stored``, ``duplicate`` (held already), ``conflict`` (another fact held under the number) or
  ``invalid`` (the batch was refused), counted by :class:`InstrumentedIngest`.
- ``counterguard_agent_outbox_depth_facts``: the outbox depth each Report gave (facts waiting on the
  workstation behind that batch), as a histogram over reports: a fleet whose delivery keeps up has
  every report at 0. Which workstation is behind: ``counterguard agents list``.
- ``counterguard_agent_outbox_set_aside_facts{agent}`` and
  ``counterguard_agent_outbox_dropped_facts{agent,kind}``: the running totals the latest
  ``OutboxNotice`` of an agent carried; only agents that ever sent a notice appear.
- ``counterguard_violations_created_total{rule}``: violations stored for the first time, after a
  report or by the sweep, and ``counterguard_sweep_duration_seconds`` / ``counterguard_sweeps_total
  {outcome}`` for the periodic sweep, counted by :class:`InstrumentedRules`.
- ``counterguard_evaluation_backlog`` (agents whose facts wait for their rule evaluation) and
  ``counterguard_evaluation_lag_seconds`` (queued → evaluated), set by
  :class:`controller.evaluation.EvaluationQueue`.
- ``counterguard_report_queue_seconds``: how long each Report waited for a thread of the gRPC pool
  (see :mod:`controller.load`), and
  ``counterguard_rules_yielding`` (1 while the rules yield to the answers).

Metrics live in the process's default registry. When ``$PROMETHEUS_MULTIPROC_DIR`` is set (before
the controller starts), prometheus_client keeps them in files there and :func:`serve_metrics`
answers with the sum over every process writing to that folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY

from controller.errors import CounterGuardError, InvalidInput
from controller.grpc_server import SERVICE_NAME
from protos.counterguard.v1 import facts_pb2

log = logging.getLogger(__name__)

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_METHOD_PREFIX = f"/{SERVICE_NAME}/"
_FACT_KINDS = frozenset(field.name for field in facts_pb2.Fact.DESCRIPTOR.oneofs_by_name["kind"].fields)

RPCS = Counter("counterguard_rpcs", "AgentService calls by method and gRPC status code.", ["method", "code"])
RPC_DURATION = Histogram(
    "counterguard_rpc_duration_seconds",
    "Time to answer an AgentService call, by method and gRPC status code.",
    ["method", "code"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FACTS = Counter("counterguard_facts", "Facts of Report calls that reached the ingest service, by outcome.", ["outcome"])
OUTBOX_DEPTH = Histogram(
    "counterguard_agent_outbox_depth_facts",
    "Facts waiting in the agent's outbox behind the batch it sent, over reports.",
    buckets=(0, 10, 100, 1_000, 10_000, 100_000, 1_000_000),
)
SET_ASIDE = Gauge(
    "counterguard_agent_outbox_set_aside_facts",
    "Facts the agent set aside because the controller refused them (running total from its latest notice).",
    ["agent"],
    multiprocess_mode="mostrecent",
)
DROPPED = Gauge(
    "counterguard_agent_outbox_dropped_facts",
    "Facts the agent dropped because its outbox was full, by fact kind (running total from its latest notice).",
    ["agent", "kind"],
    multiprocess_mode="mostrecent",
)
VIOLATIONS = Counter("counterguard_violations_created", "Violations stored for the first time, by rule.", ["rule"])
SWEEP_DURATION = Histogram(
    "counterguard_sweep_duration_seconds",
    "Time one periodic sweep of the time-based rules took (sweeps this process ran).",
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
SWEEPS = Counter(
    "counterguard_sweeps",
    "Periodic sweeps by outcome: swept, skipped (another controller sweeps), failed.",
    ["outcome"],
)
EVALUATION_BACKLOG = Gauge(
    "counterguard_evaluation_backlog",
    "Agents whose stored facts wait for their rule evaluation in this controller (summed over processes).",
    multiprocess_mode="livesum",
)
INGEST_GROUP = Histogram(
    "counterguard_ingest_group_reports",
    "Reports whose facts were stored together in one transaction (group commit, PostgreSQL).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
REPORT_QUEUE_WAIT = Histogram(
    "counterguard_report_queue_seconds",
    "Time a Report call waited for a thread of the controller's gRPC pool.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
RULES_YIELDING = Gauge(
    "counterguard_rules_yielding",
    "1 while this controller runs one rule evaluation at a time because its answers are slow.",
    multiprocess_mode="livemax",
)
EVALUATION_LAG = Histogram(
    "counterguard_evaluation_lag_seconds",
    "Time from an agent's queueing for evaluation after a report to the end of that evaluation.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every unary AgentService call by its final status; other services pass untouched."""

    def intercept_service(
        self, continuation: Callable[[Any], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None or not details.method.startswith(_METHOD_PREFIX):
            return handler
        method = details.method[len(_METHOD_PREFIX):]
        behavior = handler.unary_unary

        def measured(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            failed = True
            try:
                response = behavior(request, context)
                failed = False
                return response
            finally:
                code = context.code() or (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
                RPCS.labels(method, code.name).inc()
                RPC_DURATION.labels(method, code.name).observe(time.perf_counter() - started)

        if hasattr(behavior, "experimental_thread_pool"):  # a call answered from a pool of its own stays there
            measured.experimental_thread_pool = behavior.experimental_thread_pool  # type: ignore[attr-defined]
        return grpc.unary_unary_rpc_method_handler(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class InstrumentedIngest:
    """The ingest service, counting facts by outcome and the outbox notices agents send."""

    def __init__(self, ingest: Any) -> None:
        self._ingest = ingest

    def ingest(self, agent_id: str, facts: Sequence[facts_pb2.Fact], presented: str | None = None,
               outbox_depth: int | None = None) -> Any:
        try:
            result = self._ingest.ingest(agent_id, facts, presented, outbox_depth)
        except InvalidInput:
            FACTS.labels("invalid").inc(len(facts))
            raise
        if outbox_depth is not None:
            OUTBOX_DEPTH.observe(outbox_depth)
        conflicts = len(getattr(result, "conflicts", ()))
        FACTS.labels("stored").inc(getattr(result, "stored", 0))
        FACTS.labels("duplicate").inc(getattr(result, "duplicates", 0))
        FACTS.labels("conflict").inc(conflicts)
        for fact in facts:
            if fact.HasField("outbox_notice"):
                record_outbox_notice(agent_id, fact.outbox_notice)
        return result


def record_outbox_notice(agent_id: str, notice: facts_pb2.OutboxNotice) -> None:
    """Set the agent's outbox gauges to the totals of ``notice``; unknown kinds are summed as ``other``."""
    SET_ASIDE.labels(agent_id).set(notice.set_aside)
    dropped: dict[str, int] = {}
    for kind, count in notice.dropped.items():
        label = kind if kind in _FACT_KINDS else "other"
        dropped[label] = dropped.get(label, 0) + count
    for label, count in dropped.items():
        DROPPED.labels(agent_id, label).set(count)


class InstrumentedRules:
    """The rules service, counting the violations it creates by rule and timing its sweeps.

    ``on_ingest`` and ``sweep`` return what the rules service returned; anything else is the service's own.
    """

    def __init__(self, rules: Any) -> None:
        self._rules = rules

    def on_ingest(self, agent_id: str, facts: Sequence[facts_pb2.Fact]) -> Any:
        return count_new_violations(self._rules.on_ingest(agent_id, facts))

    def sweep(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = self._rules.sweep(*args, **kwargs)
        except Exception:
            SWEEPS.labels("failed").inc()
            raise
        if result is None:
            SWEEPS.labels("skipped").inc()
            return None
        SWEEPS.labels("swept").inc()
        SWEEP_DURATION.observe(time.perf_counter() - started)
        return count_new_violations(result)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rules, name)


def count_new_violations(result: Any) -> Any:
    """Count the violations an evaluation result lists as new (``EvaluationResult.new``); returns ``result``."""
    for violation in getattr(result, "new", ()) or ():
        VIOLATIONS.labels(violation.rule_id).inc()
    return result


@dataclass
class MetricsServer:
    """The running /metrics endpoint."""

    host: str
    port: int
    _httpd: Any

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_metrics(host: str, port: int) -> MetricsServer:
    """Serve the metrics over HTTP on ``host:port`` in a background thread (port 0: any free port)."""
    registry: Any = REGISTRY
    if os.environ.get(MULTIPROCESS_VARIABLE):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    try:
        httpd, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise CounterGuardError(
            f"cannot serve metrics on {host}:{port}: {(exc.strerror or str(exc)).lower()}"
        ) from None
    server = MetricsServer(host, int(httpd.server_port), httpd)
    log.info("Prometheus metrics on %s", server.url)
    return server
