"""Errors of the controller's service layer. Each message is one sentence naming what was wrong.

The gRPC servicer maps them to status codes and the CLI prints them; neither shows a trace.
"""

from __future__ import annotations


class CounterGuardError(Exception):
    """Base class: ``str(error)`` is the message a person reads."""


class NotFound(CounterGuardError):
    """The thing named does not exist."""


class InvalidInput(CounterGuardError):
    """A request, file or argument is malformed; the message says which part and why."""


class PermissionDenied(CounterGuardError):
    """The caller may not do this (bad, expired or used-up token …); the message gives the reason."""


class Unauthenticated(CounterGuardError):
    """The caller's identity is unknown or its certificate is revoked."""


class Conflict(CounterGuardError):
    """The request clashes with the current state (e.g. revoking what is already revoked)."""
