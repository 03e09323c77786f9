"""The gRPC face of the controller: a thin ``AgentService`` servicer over the service layer.

Each method identifies the caller, calls one service (:mod:`controller.enrollment`,
:mod:`controller.ingest`, the policy provider) and maps the service's errors to gRPC status
codes, with the error's sentence as details; a stored Report is then handed to the rules (in ``serve``
the evaluation queue of :mod:`controller.evaluation`), and its answer carries the policy provider's
notices about the violations recorded first that the rules hand back.
Report and FetchPolicy take the agent's identity from the verified client certificate, never from
the message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

import grpc
from sqlalchemy.exc import OperationalError

from controller.agents import AgentDirectory, identify
from controller.enrollment import EnrollmentService
from controller.errors import Conflict, CounterGuardError, InvalidInput, NotFound, PermissionDenied, Unauthenticated
from controller.models import Agent
from controller.policy.notices import RecordedViolation
from protos.counterguard.v1 import agent_pb2, agent_pb2_grpc, facts_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
NO_CERTIFICATE = "a client certificate is required: enrol first"

_CODES: tuple[tuple[type[CounterGuardError], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.FAILED_PRECONDITION),
)


class Acknowledgement(Protocol):
    @property
    def acknowledged_sequence(self) -> int: ...


class Ingest(Protocol):
    """What Report needs of :class:`controller.ingest.IngestService`."""

    def ingest(self, agent_id: str, facts: Sequence[facts_pb2.Fact], presented: str | None = None,
               outbox_depth: int | None = None) -> Acknowledgement:
        """Store ``facts``; with ``presented`` (the caller's certificate fingerprint) check it is the agent's.

        ``outbox_depth`` is what the agent said waits in its outbox (None: it did not say).
        """
        ...


class Evaluation(Protocol):
    """What an evaluation after ingest tells Report: :class:`controller.rules.service.EvaluationResult`."""

    @property
    def new(self) -> Sequence[RecordedViolation]: ...


class AfterIngest(Protocol):
    """What Report calls once a batch is stored: :meth:`controller.rules.service.RulesService.on_ingest`."""

    def on_ingest(self, agent_id: str, facts: Sequence[facts_pb2.Fact]) -> Evaluation | None: ...


class PolicyProvider(Protocol):
    """Where the agent-side policy comes from: its version and its content, and the notices it writes."""

    def current(self) -> tuple[str, agent_pb2.AgentPolicy]: ...

    def notices(self, agent_id: str, recorded: Sequence[RecordedViolation]) -> list[agent_pb2.Notice]: ...


class BuiltinPolicy:
    """The agent policy used until policy files exist (version ``builtin-1``).

    It sets no interval (all zero), so every agent keeps the intervals of its own settings; a
    central policy that overrides them arrives with the policy files.
    """

    VERSION = "builtin-1"

    def current(self) -> tuple[str, agent_pb2.AgentPolicy]:
        return self.VERSION, agent_pb2.AgentPolicy()

    def notices(self, agent_id: str, recorded: Sequence[RecordedViolation]) -> list[agent_pb2.Notice]:
        """None: notices are off until a policy turns them on."""
        return []


def status_code_for(
    error: CounterGuardError, overrides: Mapping[type[CounterGuardError], grpc.StatusCode] = {}
) -> grpc.StatusCode:
    """The gRPC status of a service-layer error (``overrides`` first, then the standard mapping)."""
    for kind, code in (*overrides.items(), *_CODES):
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


@contextmanager
def _status_on_error(
    context: grpc.ServicerContext, method: str, overrides: Mapping[type[CounterGuardError], grpc.StatusCode] = {}
) -> Iterator[None]:
    """Turn a service error into ``context.abort`` with the mapped code and the error's sentence; a database
    that cannot be reached into UNAVAILABLE, anything else into INTERNAL without its details."""
    try:
        yield
    except CounterGuardError as exc:
        code = status_code_for(exc, overrides)
        log.log(
            logging.WARNING
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            else logging.INFO,
            "%s from %s refused (%s): %s",
            method,
            context.peer(),
            code.name,
            exc,
        )
        context.abort(code, str(exc))
    except OperationalError as exc:  # the database is down or locked: the agent keeps its facts and retries
        log.error("%s from %s: database unavailable: %s", method, context.peer(), exc.orig)
        context.abort(grpc.StatusCode.UNAVAILABLE, "the controller's database is unavailable; try again later")
    except Exception:  # the controller's own fault: its trace goes to the log, never to the caller
        if context.code() is not None:  # an abort made inside the block (it raises a bare Exception): it stands
            raise
        log.exception("%s from %s failed", method, context.peer())
        context.abort(grpc.StatusCode.INTERNAL, f"the controller could not handle this {method}; its log says why")


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """``counterguard.v1.AgentService`` over the enrolment, directory, ingest and policy services."""

    def __init__(
        self,
        enrollment: EnrollmentService,
        directory: AgentDirectory,
        ingest: Ingest,
        policies: PolicyProvider,
        report_port: int,
        report_host: str = "",
        rules: AfterIngest | None = None,
    ) -> None:
        self._enrollment = enrollment
        self._rules = rules
        self._directory = directory
        self._ingest = ingest
        self._policies = policies
        self._report_port = report_port
        self._report_host = report_host

    def _caller(self, context: grpc.ServicerContext) -> Agent:
        """The agent behind the verified client certificate; aborts with UNAUTHENTICATED otherwise."""
        certificates = context.auth_context().get("x509_pem_cert")
        if not certificates:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, NO_CERTIFICATE)
        return self._directory.authenticate(certificates[0])

    def _presented(self, context: grpc.ServicerContext) -> tuple[str, str]:
        """The agent id and certificate fingerprint of the verified client certificate (not yet checked
        against the agent's row); aborts with UNAUTHENTICATED without a certificate."""
        certificates = context.auth_context().get("x509_pem_cert")
        if not certificates:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, NO_CERTIFICATE)
        return identify(certificates[0])

    def Enroll(self, request: agent_pb2.EnrollRequest, context: grpc.ServicerContext) -> agent_pb2.EnrollResponse:
        with _status_on_error(context, "Enroll"):
            result = self._enrollment.enroll(
                token=request.token,
                csr_pem=request.csr_pem,
                hostname=request.hostname,
                machine_id=request.machine_id,
                os_family=request.os_family,
                agent_version=request.agent_version,
            )
        return agent_pb2.EnrollResponse(
            agent_id=result.agent_id,
            certificate_pem=result.certificate_pem,
            ca_certificate_pem=result.ca_certificate_pem,
            report_host=self._report_host,
            report_port=self._report_port,
            window=result.window,
        )

    def Report(self, request: agent_pb2.ReportRequest, context: grpc.ServicerContext) -> agent_pb2.ReportResponse:
        # An agent that vanished between authentication and ingest is as unknown as one never enrolled.
        with _status_on_error(context, "Report", {NotFound: grpc.StatusCode.UNAUTHENTICATED}):
            agent_id, presented = self._presented(context)
            # The certificate is checked against the agent's row in the transaction that stores the facts.
            depth = request.outbox_depth if request.HasField("outbox_depth") else None
            result = self._ingest.ingest(agent_id, request.facts, presented, depth)
        recorded = self._evaluate(agent_id, request.facts) if getattr(result, "stored", len(request.facts)) else ()
        version, _ = self._policies.current()
        if result.conflicts:
            log.warning("agent %s re-used %d sequence numbers for new facts (from %d); asked it to renumber them",
                        agent_id, len(result.conflicts), result.conflicts[0])
        return agent_pb2.ReportResponse(
            acknowledged_sequence=result.acknowledged_sequence,
            policy_version=version,
            conflicting_sequences=result.conflicts,
            notices=self._notices(agent_id, recorded),
        )

    def _evaluate(self, agent_id: str, facts: Sequence[facts_pb2.Fact]) -> Sequence[RecordedViolation]:
        """Run the rules over a stored batch; the violations it recorded for the first time."""
        if self._rules is None:
            return ()
        try:  # the facts are stored: a failing evaluation is logged, and the sweep and re-evaluation catch up
            evaluation = self._rules.on_ingest(agent_id, facts)
        except Exception:  # noqa: BLE001 - never fail a Report whose facts were committed
            log.exception("evaluating the rules after a report of agent %s failed", agent_id)
            return ()
        return evaluation.new if evaluation is not None else ()

    def _notices(self, agent_id: str, recorded: Sequence[RecordedViolation]) -> list[agent_pb2.Notice]:
        """The policy's notices about ``recorded``; a failure is logged and costs only the notices."""
        if not recorded:
            return []
        try:
            return self._policies.notices(agent_id, recorded)
        except Exception:  # noqa: BLE001 - never fail a Report whose facts were committed
            log.exception("writing the notices for agent %s failed", agent_id)
            return []

    def FetchPolicy(
        self, request: agent_pb2.FetchPolicyRequest, context: grpc.ServicerContext
    ) -> agent_pb2.FetchPolicyResponse:
        with _status_on_error(context, "FetchPolicy"):
            self._caller(context)
            version, policy = self._policies.current()
        if request.current_version == version:
            return agent_pb2.FetchPolicyResponse(version=version, changed=False)
        return agent_pb2.FetchPolicyResponse(version=version, changed=True, policy=policy)
