"""The messages between the agent service and a session helper: small JSON objects, checked on arrival.

Every message is one UTF-8 JSON object sent as one ``multiprocessing.connection`` frame (never a
pickle: anyone on the machine may connect). Every message carries ``v`` (the protocol version,
:data:`VERSION`), ``type``, ``session`` (the helper's session id) and ``user`` (the helper's account).

From the helper:

- ``hello`` ``{platform, pid}``: first message on a connection;
- ``sample`` ``{idle_seconds, idle_source, foreground}``: input idleness and, when the service asked
  for it, the foreground window as ``{category, pattern_id, executable, pid, title}``, matched locally
  against the title patterns; ``title`` is empty unless the policy reports titles;
- ``shown`` ``{key, error}``: a notice was shown (``error`` empty) or could not be (why).

From the service:

- ``config`` ``{sample_interval, foreground, report_titles, title_patterns}``: what to sample and how
  often (``sample_interval`` 0: do not sample); patterns are ``{id, category, title_contains,
  executables}``;
- ``notice`` ``{key, title, body}``: a notice to show the person at the screen.

:func:`decode` refuses anything else with :class:`ProtocolError`, whose message says what was wrong.
Fields a message does not define are ignored, so a newer peer may add some within one version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from agent.errors import AgentError

VERSION = 1
# Frame limits: a helper's message is a few hundred bytes; a config carries the policy's title patterns.
MAX_FROM_HELPER = 8 * 1024
MAX_FROM_SERVICE = 512 * 1024
MAX_TEXT = 1024
HELPER_TYPES = frozenset({"hello", "sample", "shown"})
SERVICE_TYPES = frozenset({"config", "notice"})

Message = dict[str, Any]

_COMMON: dict[str, type | tuple[type, ...]] = {"v": int, "type": str, "session": str, "user": str}
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "hello": {"platform": str, "pid": int},
    "sample": {"idle_seconds": (int, float, type(None)), "idle_source": str, "foreground": (dict, type(None))},
    "shown": {"key": str, "error": str},
    "config": {"sample_interval": (int, float), "foreground": bool, "report_titles": bool, "title_patterns": list},
    "notice": {"key": str, "title": str, "body": str},
}
_FOREGROUND: dict[str, type | tuple[type, ...]] = {
    "category": str, "pattern_id": str, "executable": str, "pid": int, "title": str}
_PATTERN: dict[str, type | tuple[type, ...]] = {
    "id": str, "category": str, "title_contains": list, "executables": list}


class ProtocolError(AgentError):
    """A message that is not one this protocol version defines; the text says what was wrong."""


def message(kind: str, session: str, user: str, **fields: Any) -> Message:
    """A message of ``kind`` with the common fields."""
    return {"v": VERSION, "type": kind, "session": session, "user": user, **fields}


def encode(msg: Mapping[str, Any]) -> bytes:
    """The frame for ``msg`` (compact JSON, UTF-8, non-ASCII kept as is)."""
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode(raw: bytes, allowed: frozenset[str]) -> Message:
    """The message in ``raw``, checked against its type's fields; ``allowed`` are the types accepted here."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ProtocolError(f"not a JSON message ({exc})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"a message must be a JSON object, got {type(data).__name__}")
    _check_fields(data, _COMMON, "message")
    if data["v"] != VERSION:
        raise ProtocolError(f"protocol version {data['v']} is not spoken here (version {VERSION})")
    kind = data["type"]
    if kind not in allowed:
        raise ProtocolError(f"unexpected message type {kind!r} (expected one of {', '.join(sorted(allowed))})")
    _check_fields(data, _FIELDS[kind], kind)
    if kind == "sample" and data["foreground"] is not None:
        _check_fields(data["foreground"], _FOREGROUND, "sample.foreground")
    if kind == "sample" and data["idle_seconds"] is not None and data["idle_seconds"] < 0:
        raise ProtocolError(f"sample: idle_seconds must not be negative, got {data['idle_seconds']}")
    if kind == "config":
        for index, pattern in enumerate(data["title_patterns"]):
            _check_pattern(pattern, f"config.title_patterns[{index}]")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _check_fields(data: Any, fields: Mapping[str, type | tuple[type, ...]], where: str) -> None:
    if not isinstance(data, dict):
        raise ProtocolError(f"{where} must be an object")
    for name, kinds in fields.items():
        if name not in data:
            raise ProtocolError(f"{where}: field {name!r} is missing")
        value = data[name]
        allowed = kinds if isinstance(kinds, tuple) else (kinds,)
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            names = "/".join("null" if k is type(None) else k.__name__ for k in allowed)
            raise ProtocolError(f"{where}: field {name!r} must be {names}, got {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ProtocolError(f"{where}: field {name!r} is longer than {MAX_TEXT} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(f"{where}: field {name!r} must be a finite number")


def _check_pattern(pattern: Any, where: str) -> None:
    _check_fields(pattern, _PATTERN, where)
    for name in ("title_contains", "executables"):
        if not all(isinstance(item, str) for item in pattern[name]):
            raise ProtocolError(f"{where}: field {name!r} must be a list of strings")
