"""The transport: sends the outbox to the controller over mutual TLS and deletes what it acknowledged.

:meth:`Transport.send_pending` reads the head of the outbox, sends it with ``Report`` and deletes
what ``acknowledged_sequence`` covers only after the answer arrived, batch after batch until the
outbox is empty. What a failed call means is decided by :func:`decide` from its status code, and how
long to wait by :func:`backoff_delay` (exponential with full jitter); both are pure functions:

- ``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` and unexpected codes: stop, retry later with backoff;
- ``RESOURCE_EXHAUSTED`` with the trailing metadata ``retry-after-ms``: the controller's per-agent
  rate limit, not a batch too large: stop and send the same facts again after that long (at most
  the maximum backoff);
- ``INVALID_ARGUMENT`` and ``RESOURCE_EXHAUSTED``: halve the batch and retry, so one bad or huge fact
  does not cost the good ones beside it; a single fact still refused is set aside with the
  controller's reason (the outbox then queues a notice) and sending goes on. Nothing is retried
  forever: each refusal halves the batch until it is one fact;
- ``UNAUTHENTICATED``, ``PERMISSION_DENIED``: the certificate was revoked or is unknown; wait the
  maximum backoff (a person has to enrol the agent again).

Backoff uses a monotonic clock (real elapsed time); the injected wall clock only stamps
``last_report_at`` in the outbox meta.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import grpc

import agent
from agent.clock import Clock, utc_now
from agent.config import AgentConfig
from agent.enroll import CA_FILE, CERT_FILE, KEY_FILE, Enrollment, load_enrollment
from agent.errors import NotEnrolledError, PolicyError
from agent.outbox import Outbox
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2

log = logging.getLogger(__name__)
LAST_REPORT_AT = "last_report_at"
REVOKED_MESSAGE = "this agent's certificate was revoked or is unknown: enrol again"
RETRY_AFTER_KEY = "retry-after-ms"


class Action(enum.Enum):
    """What to do about a failed Report call."""

    RETRY_LATER = "retry later"
    SET_ASIDE = "set aside"
    SPLIT = "split"
    REENROL = "re-enrol"


def decide(code: grpc.StatusCode, batch_size: int) -> Action:
    """The reaction to a Report call that failed with ``code`` for a batch of ``batch_size`` facts."""
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return Action.SPLIT if batch_size > 1 else Action.SET_ASIDE
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return Action.REENROL
    return Action.RETRY_LATER


def throttle_seconds(code: grpc.StatusCode, trailing_metadata: object) -> float | None:
    """The wait a rate-limited controller asked for (``RESOURCE_EXHAUSTED`` + ``retry-after-ms``), else None."""
    if code != grpc.StatusCode.RESOURCE_EXHAUSTED or not isinstance(trailing_metadata, (tuple, list)):
        return None
    for key, value in trailing_metadata:
        if key == RETRY_AFTER_KEY and str(value).isdigit():
            return int(value) / 1000.0
    return None


def backoff_delay(failures: int, initial: float, maximum: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``failures`` consecutive failures: full jitter in [0, min(max, initial·2^(n-1))]."""
    if failures <= 0:
        return 0.0
    ceiling = min(maximum, initial * 2.0 ** min(failures - 1, 62))
    return rand() * ceiling


ResponseHandler = Callable[[agent_pb2.ReportResponse], None]


class Transport:
    """Delivers the outbox over one mutual-TLS channel, with backoff between failed attempts."""

    def __init__(
        self,
        config: AgentConfig,
        outbox: Outbox,
        clock: Clock = utc_now,
        *,
        on_response: ResponseHandler | None = None,
        enrollment: Enrollment | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.enrollment = enrollment or load_enrollment(config.state_dir)
        self.on_response = on_response
        self._clock = clock
        self._monotonic = monotonic
        self._rand = rand
        self._credentials = _client_credentials(config.state_dir)
        self._channel: grpc.Channel | None = None
        self._stub: agent_pb2_grpc.AgentServiceStub | None = None
        self._batch_limit = config.batch_max_facts
        self.failures = 0
        self.retry_at = 0.0  # monotonic time before which send_pending does not try
        self.last_error = ""
        self.revoked = False

    # -------------------------------------------------------------- channel

    def _stub_for_call(self) -> agent_pb2_grpc.AgentServiceStub:
        if self._stub is None:
            self._channel = grpc.secure_channel(self.enrollment.report_address, self._credentials)
            self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    def close(self) -> None:
        """Close the channel; the next call opens a new one."""
        if self._channel is not None:
            self._channel.close()
        self._channel, self._stub = None, None

    def retry_after(self) -> float:
        """Seconds until the next attempt is allowed (0 when not backing off)."""
        return max(0.0, self.retry_at - self._monotonic())

    # -------------------------------------------------------------- sending

    def send_pending(self, timeout: float | None = None, *, force: bool = False) -> int:
        """Send batches until the outbox is empty or a call fails; returns how many facts were acknowledged.

        ``timeout`` bounds each call and the whole round (default: ``rpc_timeout_seconds`` per call);
        ``force`` ignores a running backoff (the last send before the service stops).
        """
        if not force and self.retry_after() > 0:
            return 0
        per_call = timeout or self.config.rpc_timeout_seconds
        deadline = self._monotonic() + timeout if timeout else None
        delivered = 0
        waiting = self.outbox.depth()  # counted once a round; facts observed meanwhile are not in it
        while deadline is None or self._monotonic() < deadline:
            batch = self.outbox.head(self._batch_limit, self.config.batch_max_bytes)
            if not batch:
                break
            outcome = self._send_batch(batch, per_call, behind=max(0, waiting - delivered - len(batch)))
            if outcome is None:
                break
            delivered += outcome
        return delivered

    def _send_batch(self, batch: list[facts_pb2.Fact], timeout: float, behind: int) -> int | None:
        """One Report call (``behind``: facts waiting after this batch); how many facts it got acknowledged,
        or None to stop this round."""
        request = agent_pb2.ReportRequest(facts=batch, agent_version=agent.__version__, outbox_depth=behind)
        try:
            response = self._stub_for_call().Report(request, timeout=timeout)
        except grpc.RpcError as exc:
            wait = throttle_seconds(exc.code(), exc.trailing_metadata())
            if wait is not None:
                self._throttled(wait, exc.details() or "")
                return None
            return self._failed(batch, exc.code(), exc.details() or "")
        return self._acknowledged(batch, response)

    def _throttled(self, seconds: float, details: str) -> None:
        """Keep the batch and wait as long as the controller asked (bounded by the maximum backoff)."""
        delay = min(seconds, self.config.backoff_max_seconds)
        self.last_error = f"RESOURCE_EXHAUSTED: {details}"
        self.retry_at = self._monotonic() + delay
        log.info("controller asked this agent to slow down; next report in %.2fs (%s)", delay, details)

    def _acknowledged(self, batch: list[facts_pb2.Fact], response: agent_pb2.ReportResponse) -> int | None:
        ack = response.acknowledged_sequence
        if response.conflicting_sequences:
            moved = self.outbox.renumber(response.conflicting_sequences, above=ack)
            log.warning("the controller holds other facts under %d of our sequence numbers (outbox restored "
                        "from an older copy?); renumbered them above %d", moved, ack)
        elif ack > self.outbox.last_sequence():
            self.outbox.skip_past(ack)
        # Trust the acknowledgement only for what this batch carried: facts waiting behind it with
        # numbers up to ``ack`` were never seen by the controller and are sent (and judged) next.
        deleted = self.outbox.acknowledge(min(ack, batch[-1].sequence))
        self.outbox.set_meta(LAST_REPORT_AT, self._clock().isoformat())
        self._succeeded()
        log.debug("report acknowledged facts=%d acknowledged_sequence=%d", deleted, ack)
        if self.on_response is not None:
            self.on_response(response)
        if ack < batch[-1].sequence:
            self._back_off(f"the controller acknowledged {ack} of a batch up to {batch[-1].sequence}")
            return None
        return deleted

    def _succeeded(self) -> None:
        self.failures, self.retry_at, self.last_error, self.revoked = 0, 0.0, "", False
        self._batch_limit = min(self.config.batch_max_facts, self._batch_limit * 2)

    def _failed(self, batch: list[facts_pb2.Fact], code: grpc.StatusCode, details: str) -> int | None:
        action = decide(code, len(batch))
        if action is Action.SET_ASIDE:
            reason = details or code.name
            moved = self.outbox.set_aside(batch, reason)
            log.warning("controller rejected a batch; set aside facts=%d first=%d reason=%s",
                        moved, batch[0].sequence, reason)
            return 0
        if action is Action.SPLIT:
            self._batch_limit = max(1, len(batch) // 2)
            log.info("controller refused a batch of %d facts (%s: %s); trying %d", len(batch), code.name, details,
                     self._batch_limit)
            return 0
        self.close()
        if action is Action.REENROL:
            self.revoked = True
            log.error("%s (controller said %s: %s)", REVOKED_MESSAGE, code.name, details)
            self._back_off(f"{code.name}: {details}", at_maximum=True)
        else:
            self._back_off(f"{code.name}: {details}")
        return None

    def _back_off(self, error: str, *, at_maximum: bool = False) -> None:
        self.failures += 1
        self.last_error = error
        cfg = self.config
        delay = cfg.backoff_max_seconds if at_maximum else backoff_delay(
            self.failures, cfg.backoff_initial_seconds, cfg.backoff_max_seconds, self._rand)
        self.retry_at = self._monotonic() + delay
        log.warning("report failed, retrying in %.1fs failures=%d error=%s", delay, self.failures, error)

    # --------------------------------------------------------------- policy

    def fetch_policy(self, current_version: str) -> agent_pb2.FetchPolicyResponse:
        """The agent policy if it differs from ``current_version`` (``changed`` says whether it did)."""
        request = agent_pb2.FetchPolicyRequest(current_version=current_version)
        try:
            answer: agent_pb2.FetchPolicyResponse = self._stub_for_call().FetchPolicy(
                request, timeout=self.config.rpc_timeout_seconds)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            raise PolicyError(f"fetching the policy from {self.enrollment.report_address} failed: "
                              f"{code.name}: {details}") from None
        return answer


def _client_credentials(state_dir: Path) -> grpc.ChannelCredentials:
    """Our key and certificate, and the controller's CA, from the state directory."""
    try:
        key, cert, ca = ((state_dir / name).read_bytes() for name in (KEY_FILE, CERT_FILE, CA_FILE))
    except FileNotFoundError as exc:
        raise NotEnrolledError(
            f"this agent is not enrolled ({exc.filename} is missing): run `counterguard-agent enroll`") from None
    except OSError as exc:
        raise NotEnrolledError(f"{exc.filename}: cannot read the agent's credentials ({exc.strerror})") from None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
