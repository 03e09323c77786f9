"""What the person at a workstation is told when a report of theirs leads to a violation.

When a policy's ``agent.notices_enabled`` is on, the answer to a ``Report`` carries one
:class:`~protos.counterguard.v1.agent_pb2.Notice` per violation that report's evaluation recorded for
the first time. Informational violations (recorded, never scored) are not announced. The title is the
rule's ``notice`` text, else the policy's ``agent.notice_default``; the body says what and when in a
few characters, ``扫雷 (GNOME Mines) · 14:05 · R11.6; R9 7(2)14``: the violation's subject up to its
first ``": "`` (where the rules put the identity of a run), the local time in the policy's zone
(with the date when it is not within the last 12 hours), and the rule's reference.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Protocol

from controller.policy.model import Policy
from protos.counterguard.v1 import agent_pb2

RECENT = dt.timedelta(hours=12)
_MAX_WHAT = 40


class RecordedViolation(Protocol):
    """What a notice needs of a newly stored violation (:class:`controller.rules.base.ViolationCandidate`)."""

    @property
    def key(self) -> str: ...

    @property
    def rule_id(self) -> str: ...

    @property
    def ref(self) -> str: ...

    @property
    def agent_id(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def occurred_at(self) -> dt.datetime: ...

    @property
    def informational(self) -> bool: ...


def what(subject: str) -> str:
    """The short name of a violation's subject: up to its first ``": "``, at most 40 characters."""
    head = subject.split(": ", 1)[0].strip()
    return head if len(head) <= _MAX_WHAT else head[:_MAX_WHAT - 1] + "…"


def when(moment: dt.datetime, policy: Policy, now: dt.datetime) -> str:
    """``HH:MM`` in the policy's zone, ``MM-DD HH:MM`` when the moment is not within the last 12 hours."""
    local = moment.astimezone(policy.zone)
    return local.strftime("%H:%M" if now - moment <= RECENT else "%m-%d %H:%M")


def notice_for(policy: Policy, violation: RecordedViolation, now: dt.datetime) -> agent_pb2.Notice:
    """The notice announcing one violation under ``policy``."""
    texts = {rule.id: rule.notice for rule in policy.rules}
    notice = agent_pb2.Notice(
        violation_key=violation.key,
        rule_id=violation.rule_id,
        title=texts.get(violation.rule_id) or policy.agent.notice_default,
        body=" · ".join(part for part in (what(violation.subject), when(violation.occurred_at, policy, now),
                                          violation.ref) if part),
    )
    notice.occurred_at.FromDatetime(violation.occurred_at)
    return notice


def notices_for(policy: Policy, recorded: Iterable[RecordedViolation], agent_id: str,
                now: dt.datetime) -> list[agent_pb2.Notice]:
    """The notices for the agent's newly recorded violations; none when the policy's notices are off."""
    if not policy.agent.notices_enabled:
        return []
    return [notice_for(policy, violation, now) for violation in recorded
            if violation.agent_id == agent_id and not violation.informational]
