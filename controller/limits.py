"""Rate limits on every AgentService call, enforced before the request is parsed or anything is stored.

Each agent, named by the common name of its client certificate (verified against our CA by the TLS
handshake), has two token buckets for Report: calls and facts. A call that finds either bucket short is
refused with ``RESOURCE_EXHAUSTED``, a sentence saying which limit, and the trailing metadata
``retry-after-ms``: how long until the bucket holds enough again. The agent waits that long and
sends the same facts again, so nothing is lost and one broken workstation cannot starve the hall.
FetchPolicy has a bucket of its own per agent (an agent asks at start and now and then; a loop asking
without pause is refused the same way and keeps the policy it has).

Before all that, as a Report arrives, it is refused the same way while too many calls wait for a
thread of this controller process (:mod:`controller.load`).

Enroll comes before any certificate, from an address: each address has a bucket of **failed**
enrolments (a wrong, used-up or expired token, a bad request). While it is empty, Enroll from that
address is refused with ``RESOURCE_EXHAUSTED`` before the token is looked at, which stops guessing
tokens and floods of bad requests; successful enrolments take nothing, so a hall behind one NAT
address can still enrol all its PCs at once. Failures that are the controller's (its database
down) take nothing either.

:class:`RateLimitInterceptor` does this as a gRPC server interceptor, in this order: identity (a
Report without a client certificate is refused here, unparsed), the call bucket, then parsing the
request, then the fact bucket, then the servicer. A refused call takes no tokens. It parses the
requests of every AgentService method itself, so bytes that are not the method's request message
are ``INVALID_ARGUMENT`` with a reason rather than gRPC's internal error.

Buckets live in the memory of one controller process. With N worker processes an agent that
spread its calls over all of them could reach N times the configured rates; in practice an agent's
calls share one HTTP/2 connection, which the kernel hands to one worker, so it meets one limit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from controller.config import Settings
from controller.errors import InvalidInput
from controller.grpc_server import NO_CERTIFICATE, SERVICE_NAME
from controller.load import ReportLoad, call_load, queue_wait
from controller.metrics import REPORT_QUEUE_WAIT

log = logging.getLogger(__name__)

METHOD_PREFIX = f"/{SERVICE_NAME}/"
REPORT_METHOD = f"{METHOD_PREFIX}Report"
FETCH_POLICY_METHOD = f"{METHOD_PREFIX}FetchPolicy"
ENROLL_METHOD = f"{METHOD_PREFIX}Enroll"
RETRY_AFTER_KEY = "retry-after-ms"


def undecodable(method: str) -> str:
    """The reason given for bytes that are not the request message of ``method`` (e.g. ``Report``)."""
    return f"the request is not a valid {method}Request message (protobuf wire format)"


NOT_A_REPORT = undecodable("Report")
_WARN_EVERY_SECONDS = 60.0
# Enroll refusals that are the caller's doing (the ones a failure bucket counts); UNAVAILABLE, INTERNAL and
# the like are the controller's.
_CALLER_FAULTS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
})


@dataclass(frozen=True)
class RateLimits:
    """The limits (see the module docstring); a rate of 0 turns that limit off."""

    reports_per_second: float
    report_burst: int
    facts_per_second: float
    fact_burst: int
    policy_fetches_per_minute: float = Settings.agent_policy_fetches_per_minute
    policy_fetch_burst: int = Settings.agent_policy_fetch_burst
    enroll_failures_per_minute: float = Settings.enroll_failures_per_minute
    enroll_failure_burst: int = Settings.enroll_failure_burst

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        """The limits the settings give; :class:`InvalidInput` names a burst below 1 for a limit that is on."""
        for rate, burst in (("agent_reports_per_second", "agent_report_burst"),
                            ("agent_facts_per_second", "agent_fact_burst"),
                            ("agent_policy_fetches_per_minute", "agent_policy_fetch_burst"),
                            ("enroll_failures_per_minute", "enroll_failure_burst")):
            if getattr(settings, rate) > 0 and getattr(settings, burst) < 1:
                raise InvalidInput(f"setting {burst} must be at least 1 while {rate} is above 0, "
                                   f"not {getattr(settings, burst)}")
        return cls(
            settings.agent_reports_per_second,
            settings.agent_report_burst,
            settings.agent_facts_per_second,
            settings.agent_fact_burst,
            settings.agent_policy_fetches_per_minute,
            settings.agent_policy_fetch_burst,
            settings.enroll_failures_per_minute,
            settings.enroll_failure_burst,
        )


class TokenBuckets:
    """One token bucket per key, refilled at ``rate`` tokens per second up to ``burst``; thread-safe.

    A key without a bucket has a full one, so buckets that have filled up again are forgotten when
    there are more than ``max_keys``.
    """

    def __init__(
        self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs a rate above 0 and a burst of at least 1, not {rate} and {burst}")
        self.rate, self.burst = float(rate), burst
        self._monotonic = monotonic
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key: str, cost: int = 1) -> float:
        """Take ``cost`` tokens (at most a full bucket) from ``key``'s bucket and return 0, or take
        nothing and return the seconds until the bucket will hold them."""
        return self._take(key, cost, take=True)

    def wait(self, key: str, cost: int = 1) -> float:
        """The seconds until ``key``'s bucket holds ``cost`` tokens (0: it does now); takes nothing."""
        return self._take(key, cost, take=False)

    def _take(self, key: str, cost: int, take: bool) -> float:
        cost = min(cost, self.burst)
        with self._lock:
            now = self._monotonic()
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if not take:
                return max(0.0, (cost - tokens) / self.rate)
            if tokens < cost:
                self._buckets[key] = (tokens, now)
                return (cost - tokens) / self.rate
            if key not in self._buckets and len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            self._buckets[key] = (tokens - cost, now)
            return 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget_full(self, now: float) -> None:
        full = [key for key, (tokens, then) in self._buckets.items() if tokens + (now - then) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]


def _buckets(rate: float, burst: int, monotonic: Callable[[], float]) -> TokenBuckets | None:
    return TokenBuckets(rate, burst, monotonic) if rate > 0 else None


class RateLimitInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Guards the AgentService methods with their buckets (see the module docstring)."""

    def __init__(self, limits: RateLimits, monotonic: Callable[[], float] = time.monotonic,
                 load: ReportLoad | None = None) -> None:
        self._monotonic = monotonic
        self._load = load
        self._reports = _buckets(limits.reports_per_second, limits.report_burst, monotonic)
        self._facts = _buckets(limits.facts_per_second, limits.fact_burst, monotonic)
        self._fetches = _buckets(limits.policy_fetches_per_minute / 60, limits.policy_fetch_burst, monotonic)
        self._enroll_failures = _buckets(limits.enroll_failures_per_minute / 60, limits.enroll_failure_burst,
                                         monotonic)
        self._warned: dict[str, float] = {}

    def intercept_service(
        self, continuation: Callable[[Any], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None or not details.method.startswith(METHOD_PREFIX):
            return handler
        behavior, parse = handler.unary_unary, handler.request_deserializer
        if details.method == REPORT_METHOD and self._load is not None:
            retry = self._load.retry_after()  # decided as the call arrives, before it queues
            if retry is not None:
                return self._overloaded(self._load, retry, handler.response_serializer)
        reason = undecodable(details.method[len(METHOD_PREFIX):])

        def parsed(raw: bytes, context: grpc.ServicerContext) -> Any:
            return behavior(_parse(parse, raw, context, reason), context)

        def guarded(raw: bytes, context: grpc.ServicerContext) -> Any:
            return self._report(behavior, parse, raw, context)

        def fetching(raw: bytes, context: grpc.ServicerContext) -> Any:
            agent = _certificate_name(context)
            if agent and self._fetches is not None:  # without a certificate the servicer refuses it
                self._check(context, agent, self._fetches, 1, "policy fetches", "FetchPolicy", per_minute=True)
            return parsed(raw, context)

        def enrolling(raw: bytes, context: grpc.ServicerContext) -> Any:
            return self._enroll(parsed, raw, context)

        chosen = {REPORT_METHOD: guarded, FETCH_POLICY_METHOD: fetching, ENROLL_METHOD: enrolling}
        # No deserializer: the request arrives as bytes and is parsed here (a Report once it is allowed).
        return grpc.unary_unary_rpc_method_handler(
            chosen.get(details.method, parsed), response_serializer=handler.response_serializer
        )

    def _enroll(self, call: Callable[[bytes, grpc.ServicerContext], Any], raw: bytes,
                context: grpc.ServicerContext) -> Any:
        buckets = self._enroll_failures
        if buckets is None:
            return call(raw, context)
        address = peer_address(context.peer())
        wait = buckets.wait(address)
        if wait:
            self._refuse(context, address, wait,
                         f"address {address} is over its limit of {buckets.rate * 60:g} failed enrolments per minute "
                         f"(burst {buckets.burst})", "Enroll")
        try:
            return call(raw, context)
        except BaseException:
            if context.code() in _CALLER_FAULTS:
                buckets.take(address)
            raise

    def _report(
        self, behavior: Callable[[Any, grpc.ServicerContext], Any], parse: Callable[[bytes], Any], raw: bytes,
        context: grpc.ServicerContext,
    ) -> Any:
        waited = queue_wait()
        REPORT_QUEUE_WAIT.observe(waited)
        agent = _certificate_name(context)
        if not agent:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, NO_CERTIFICATE)
        try:
            return self._allowed(behavior, parse, raw, context, agent)
        finally:
            if self._load is not None:
                self._load.observe(call_load())

    def _overloaded(self, load: ReportLoad, retry: float, serializer: Any) -> grpc.RpcMethodHandler:
        """A Report handler that refuses the call at once, from the refusals' own thread."""
        waiting = load.waiting

        def refuse(raw: bytes, context: grpc.ServicerContext) -> Any:
            self._refuse(context, "(overload)", retry,
                         f"the controller is overloaded: {waiting} calls wait for a thread (limit {load.queue_limit})",
                         "Report")

        refuse.experimental_thread_pool = load.refusals  # type: ignore[attr-defined]  # grpc picks this pool
        return grpc.unary_unary_rpc_method_handler(refuse, response_serializer=serializer)

    def _allowed(
        self, behavior: Callable[[Any, grpc.ServicerContext], Any], parse: Callable[[bytes], Any], raw: bytes,
        context: grpc.ServicerContext, agent: str,
    ) -> Any:
        """The rest of a Report past identity and overload: the agent's buckets, parsing, the servicer."""
        if self._reports is not None:
            self._check(context, agent, self._reports, 1, "reports")
        request = _parse(parse, raw, context, NOT_A_REPORT)
        if self._facts is not None and request.facts:
            self._check(context, agent, self._facts, len(request.facts), "facts")
        return behavior(request, context)

    def _check(self, context: grpc.ServicerContext, agent: str, buckets: TokenBuckets, cost: int, what: str,
               method: str = "Report", per_minute: bool = False) -> None:
        wait = buckets.take(agent, cost)
        if not wait:
            return
        rate, per = (buckets.rate * 60, "minute") if per_minute else (buckets.rate, "second")
        self._refuse(context, agent, wait, f"agent {agent} is over its limit of {rate:g} {what} per {per} "
                                           f"(burst {buckets.burst})", method)

    def _refuse(self, context: grpc.ServicerContext, who: str, wait: float, limit: str, method: str) -> None:
        """Abort with ``RESOURCE_EXHAUSTED``, the ``limit`` broken and the wait, in words and in ``retry-after-ms``."""
        milliseconds = max(1, math.ceil(wait * 1000))
        message = f"{limit}; retry in {milliseconds} ms"
        self._log(f"{method} {who}", f"{method} refused: {message}")
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(milliseconds)),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def _log(self, key: str, message: str) -> None:
        """A warning the first time a caller is refused in a while, debug lines while it keeps going."""
        now = self._monotonic()
        if now - self._warned.get(key, -math.inf) < _WARN_EVERY_SECONDS:
            log.debug("%s", message)
            return
        if len(self._warned) > 10_000:
            self._warned.clear()
        self._warned[key] = now
        log.warning("%s (further refusals for %.0f s are logged at debug level)", message, _WARN_EVERY_SECONDS)


def _parse(parse: Callable[[bytes], Any], raw: bytes, context: grpc.ServicerContext, reason: str) -> Any:
    """The request message of ``raw``; aborts with ``INVALID_ARGUMENT`` and ``reason`` when it is not one."""
    try:
        return parse(raw)
    except DecodeError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)


def peer_address(peer: str) -> str:
    """The address part of a gRPC peer (``ipv4:10.1.2.3:50000`` → ``10.1.2.3``, ``ipv6:[::1]:50000`` → ``::1``)."""
    _, _, rest = peer.partition(":")
    host = urllib.parse.unquote(rest.rpartition(":")[0] or rest)
    return host.removeprefix("[").removesuffix("]") or peer


def _certificate_name(context: grpc.ServicerContext) -> str:
    """The common name of the verified client certificate; empty when the call came without one."""
    names = context.auth_context().get("x509_common_name")
    return bytes(names[0]).decode("utf-8", "replace") if names else ""
