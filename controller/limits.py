"""Per-agent rate limits on Report, enforced before the request is parsed or anything is stored.

Each agent, named by the common name of its client certificate (verified against our CA by the TLS
handshake), has two token buckets: Report calls and facts. A call that finds either bucket short is
refused with ``RESOURCE_EXHAUSTED``, a sentence saying which limit, and the trailing metadata
``retry-after-ms``: how long until the bucket holds enough again. The agent waits that long and
sends the same facts again, so nothing is lost and one broken workstation cannot starve the hall.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from controller.config import Settings
from controller.errors import InvalidInput
from controller.grpc_server import NO_CERTIFICATE, SERVICE_NAME

log = logging.getLogger(__name__)

METHOD_PREFIX = f"/{SERVICE_NAME}/"
REPORT_METHOD = f"{METHOD_PREFIX}Report"
RETRY_AFTER_KEY = "retry-after-ms"


def undecodable(method: str) -> str:
    """The reason given for bytes that are not the request message of ``method`` (e.g. ``Report``)."""
    return f"the request is not a valid {method}Request message (protobuf wire format)"


NOT_A_REPORT = undecodable("Report")
_WARN_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class RateLimits:
    """The per-agent limits; a rate of 0 turns that limit off."""

    reports_per_second: float
    report_burst: int
    facts_per_second: float
    fact_burst: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        """The limits the settings give; :class:`InvalidInput` names a burst below 1 for a limit that is on."""
        for rate, burst in (("agent_reports_per_second", "agent_report_burst"),
                            ("agent_facts_per_second", "agent_fact_burst")):
            if getattr(settings, rate) > 0 and getattr(settings, burst) < 1:
                raise InvalidInput(f"setting {burst} must be at least 1 while {rate} is above 0, "
                                   f"not {getattr(settings, burst)}")
        return cls(
            settings.agent_reports_per_second,
            settings.agent_report_burst,
            settings.agent_facts_per_second,
            settings.agent_fact_burst,
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
        cost = min(cost, self.burst)
        with self._lock:
            now = self._monotonic()
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
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


class RateLimitInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Guards ``Report`` with the per-agent buckets; other methods pass untouched."""

    def __init__(self, limits: RateLimits, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._reports = (
            TokenBuckets(limits.reports_per_second, limits.report_burst, monotonic)
            if limits.reports_per_second > 0
            else None
        )
        self._facts = (
            TokenBuckets(limits.facts_per_second, limits.fact_burst, monotonic) if limits.facts_per_second > 0 else None
        )
        self._warned: dict[str, float] = {}

    def intercept_service(
        self, continuation: Callable[[Any], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None or not details.method.startswith(METHOD_PREFIX):
            return handler
        behavior, parse = handler.unary_unary, handler.request_deserializer
        reason = undecodable(details.method[len(METHOD_PREFIX):])

        def parsed(raw: bytes, context: grpc.ServicerContext) -> Any:
            return behavior(_parse(parse, raw, context, reason), context)

        def guarded(raw: bytes, context: grpc.ServicerContext) -> Any:
            return self._report(behavior, parse, raw, context)

        # No deserializer: the request arrives as bytes and is parsed here (a Report once it is allowed).
        return grpc.unary_unary_rpc_method_handler(
            guarded if details.method == REPORT_METHOD else parsed, response_serializer=handler.response_serializer
        )

    def _report(
        self, behavior: Callable[[Any, grpc.ServicerContext], Any], parse: Callable[[bytes], Any], raw: bytes,
        context: grpc.ServicerContext,
    ) -> Any:
        agent = _certificate_name(context)
        if not agent:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, NO_CERTIFICATE)
        if self._reports is not None:
            self._check(context, agent, self._reports, 1, "reports")
        request = _parse(parse, raw, context, NOT_A_REPORT)
        if self._facts is not None and request.facts:
            self._check(context, agent, self._facts, len(request.facts), "facts")
        return behavior(request, context)

    def _check(self, context: grpc.ServicerContext, agent: str, buckets: TokenBuckets, cost: int, what: str) -> None:
        wait = buckets.take(agent, cost)
        if not wait:
            return
        milliseconds = max(1, math.ceil(wait * 1000))
        message = (
            f"agent {agent} is over its limit of {buckets.rate:g} {what} per second (burst {buckets.burst}); "
            f"retry in {milliseconds} ms"
        )
        self._log(agent, message)
        context.set_trailing_metadata(((RETRY_AFTER_KEY, str(milliseconds)),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    def _log(self, agent: str, message: str) -> None:
        """A warning the first time an agent is refused in a while, debug lines while it keeps going."""
        now = self._monotonic()
        if now - self._warned.get(agent, -math.inf) < _WARN_EVERY_SECONDS:
            log.debug("Report refused: %s", message)
            return
        if len(self._warned) > 10_000:
            self._warned.clear()
        self._warned[agent] = now
        log.warning("Report refused: %s (further refusals of this agent for %.0f s are logged at debug level)",
                    message, _WARN_EVERY_SECONDS)


def _parse(parse: Callable[[bytes], Any], raw: bytes, context: grpc.ServicerContext, reason: str) -> Any:
    """The request message of ``raw``; aborts with ``INVALID_ARGUMENT`` and ``reason`` when it is not one."""
    try:
        return parse(raw)
    except DecodeError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)


def _certificate_name(context: grpc.ServicerContext) -> str:
    """The common name of the verified client certificate; empty when the call came without one."""
    names = context.auth_context().get("x509_common_name")
    return bytes(names[0]).decode("utf-8", "replace") if names else ""
