"""Errors of the CounterGuard agent. Each message is one sentence naming what was wrong and where.

The CLI prints ``error: <message>`` and exits 1; it never shows a traceback for these.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class: ``str(error)`` is the message a person reads."""


class ConfigError(AgentError):
    """A configuration file or environment variable is invalid; the message names which and the field."""


class OutboxError(AgentError):
    """The outbox cannot store or read a fact (wrong message type, unreadable database)."""


class NotEnrolledError(AgentError):
    """The agent has no enrolment (certificate, key, enrollment.json) in its state directory."""


class EnrollError(AgentError):
    """Enrolment failed: refused by the controller, unreachable, or an unusable answer."""


class DeliveryError(AgentError):
    """Facts could not be delivered to the controller within the allowed time."""


class PolicyError(AgentError):
    """The agent policy could not be fetched from the controller."""
