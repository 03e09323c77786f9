"""Read a policy file: safe YAML in, a validated :class:`~controller.policy.model.Policy` out.

Every problem becomes one line ``FILE:LINE: FIELD: what is wrong`` (all problems of a file, in
file order), raised as :class:`PolicyError`. The YAML reader is deliberately small:

* no anchors or aliases (no "billion laughs"), no tags (nothing is ever constructed from a tag),
  no duplicate keys, only string keys, a bounded nesting depth and file size;
* scalars resolve as in YAML 1.2's core schema: ``true``/``false`` only (``no`` and ``on`` stay
  text), decimal integers, plain floats, ``null``; ``13:00`` stays the text ``13:00`` (YAML 1.1
  would read a base-60 number, 780) and dates stay text for the model to parse.

The model is then checked in pydantic's strict JSON mode, so ``"30"`` is not silently the number 30.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.events import AliasEvent, CollectionStartEvent, NodeEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from controller.errors import InvalidInput
from controller.policy.model import Policy

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
_MAX_NUMBER_LENGTH = 40

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy file: where (file, line, field path) and what."""

    source: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class PolicyError(InvalidInput):
    """A policy file is not valid; ``str()`` lists every problem, one per line, in file order."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = sorted(issues, key=lambda issue: issue.line)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def _refused(source: str, line: int, message: str) -> PolicyError:
    return PolicyError([PolicyIssue(source, line, "", message)])


class _YamlRefused(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _PolicyYamlLoader(yaml.SafeLoader):
    """A SafeLoader that composes nodes only, refusing anchors, aliases, tags and deep nesting."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # type: ignore[override]
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise _YamlRefused(line, f"aliases (*{event.anchor}) are not allowed in a policy file")
        if isinstance(event, NodeEvent) and event.anchor is not None:
            raise _YamlRefused(line, f"anchors (&{event.anchor}) are not allowed in a policy file")
        if isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.tag not in (None, "!"):
            raise _YamlRefused(line, f"tags ({event.tag}) are not allowed in a policy file")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _YamlRefused(line, f"nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


# YAML 1.2 core schema, minus infinities and NaN (no policy number is infinite).
for _tag, _pattern, _first in (
    (_BOOL, r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    (_INT, r"^[-+]?[0-9]+$", "-+0123456789"),
    (_FLOAT, r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$", "-+.0123456789"),
    (_NULL, r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _PolicyYamlLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


class _Builder:
    """Turns composed nodes into plain data, remembering the line of every value and key."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.issues: list[tuple[int, Path_, str]] = []

    def build(self, node: Node, path: Path_) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node, path)

    def _mapping(self, node: MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not (isinstance(key_node, ScalarNode) and key_node.tag == _STR):
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                self.issues.append((line, path, f"keys must be text; {shown!r} is not (quote it)"))
                continue
            key = key_node.value
            if key in result:
                first = self.lines[(*path, key)]
                self.issues.append((line, (*path, key), f"duplicate key {key!r} (first on line {first})"))
                continue
            self.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key))
        return result

    def _scalar(self, node: ScalarNode, path: Path_) -> Any:
        value, line = node.value, node.start_mark.line + 1
        if node.tag == _NULL:
            return None
        if node.tag == _BOOL:
            return value.lower() == "true"
        if node.tag in (_INT, _FLOAT):
            if len(value) > _MAX_NUMBER_LENGTH:
                self.issues.append((line, path, f"the number {value[:20]}… is too long"))
                return None
            number = int(value) if node.tag == _INT else float(value)
            if isinstance(number, float) and not math.isfinite(number):
                self.issues.append((line, path, f"{value!r} is not a finite number"))
                return None
            return number
        return value


def field_path(path: Path_) -> str:
    """``('rules', 3, 'categories', 0)`` → ``rules[3].categories[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(lines: dict[Path_, int], path: Path_) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


_UNION_MEMBERS = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|function-.*|constrained-.*|literal\[.*\])$")


def _model_fields(model: type[BaseModel], path: Path_) -> list[str]:
    """The field names allowed at ``path`` (for "did you mean" hints)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        info = getattr(current, "model_fields", {}).get(part)
        if info is None:
            return []
        annotation = info.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
        else:
            return []
    return list(getattr(current, "model_fields", {}))


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _message(error: dict[str, Any], path: Path_) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        known = _model_fields(Policy, path[:-1])
        close = difflib.get_close_matches(str(path[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})" if known else ""
        return f"unknown field {str(path[-1])!r}{hint}"
    if kind == "missing":
        return "required, but missing"
    if kind in ("enum", "literal_error"):
        expected = error.get("ctx", {}).get("expected", "")
        options = ", ".join(option.strip().strip("'") for option in re.split(r",| or ", expected) if option.strip())
        return f"{error['input']!r} is not one of {options}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"should be a mapping (key: value), not {_kind_of(error.get('input'))}"
    if kind == "list_type":
        return f"should be a list, not {_kind_of(error.get('input'))}"
    if kind == "time_parsing":
        return f"{error['input']!r} is not a time of day (write HH:MM, e.g. 09:00)"
    if kind == "date_from_datetime_parsing" or kind == "date_parsing":
        return f"{error['input']!r} is not a date (write YYYY-MM-DD, e.g. 2026-10-01)"
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    if "input" in error and not isinstance(error["input"], (dict, list)):
        return f"{message} (got {error['input']!r})"
    return message


def _validation_issues(source: str, exc: ValidationError, lines: dict[Path_, int]) -> list[PolicyIssue]:
    merged: dict[Path_, list[str]] = {}
    for error in exc.errors(include_url=False):
        path = tuple(error["loc"])
        while path and isinstance(path[-1], str) and _UNION_MEMBERS.match(path[-1]):
            path = path[:-1]  # pydantic names the union member it tried; the user wrote one field
        message = _message(error, path)
        if message not in merged.setdefault(path, []):
            merged[path].append(message)
    return [
        PolicyIssue(source, _line_of(lines, path), field_path(path), " or ".join(messages))
        for path, messages in merged.items()
    ]


def _check_calendar(source: str, policy: Policy, lines: dict[Path_, int]) -> list[PolicyIssue]:
    """What the model cannot check alone: the calendar library must know the subdivision."""
    subdivision = policy.calendar.subdivision
    if subdivision is None:
        return []
    import holidays

    known = holidays.country_holidays(policy.calendar.country).subdivisions
    if subdivision in known:
        return []
    path: Path_ = ("calendar", "subdivision")
    listing = ", ".join(known) if known else "none; leave it out"
    message = f"{subdivision!r} is not a known subdivision ({listing})"
    return [PolicyIssue(source, _line_of(lines, path), field_path(path), message)]


def read_yaml(text: str, source: str) -> tuple[Any, dict[Path_, int]]:
    """Safe YAML ``text`` as plain data (mappings, lists, text, numbers, booleans, null), and the
    line of every value by its path; :class:`PolicyError` for anything refused or malformed."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise _refused(source, 0, f"the file is {size} bytes; at most {MAX_BYTES} bytes are allowed")
    loader: _PolicyYamlLoader | None = None
    try:
        loader = _PolicyYamlLoader(text)
        node = loader.get_single_node()
    except _YamlRefused as exc:
        raise _refused(source, exc.line, exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise _refused(source, mark.line + 1 if mark else 0, f"not valid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; it knows only the offset
        line = text[: exc.position].count("\n") + 1
        shown = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise _refused(source, line, f"not valid YAML: the character {shown} is not allowed ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise _refused(source, 0, f"not valid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        raise _refused(source, 1, "the file is empty")
    builder = _Builder()
    data = builder.build(node, ())
    if builder.issues:
        raise PolicyError([PolicyIssue(source, line, field_path(path), text) for line, path, text in builder.issues])
    return data, builder.lines


def load_policy_text(text: str, source: str) -> Policy:
    """Parse and validate the YAML ``text`` of a policy; ``source`` names it in errors (a file name)."""
    data, lines = read_yaml(text, source)
    if not isinstance(data, dict):
        raise _refused(source, 1, "a policy must be a mapping of fields (id, version, name, …)")
    try:
        policy = Policy.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise PolicyError(_validation_issues(source, exc, lines)) from None
    issues = _check_calendar(source, policy, lines)
    if issues:
        raise PolicyError(issues)
    return policy


def read_policy_file(path: str | Path) -> str:
    """The text of a policy file (UTF-8, optional BOM), refusing one over :data:`MAX_BYTES` unread."""
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _refused(source, 0, f"cannot read the file: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise _refused(source, 0, f"the file is larger than {MAX_BYTES} bytes, the most a policy file may be")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _refused(source, line, "not UTF-8 text (save the file as UTF-8)") from None


def load_policy_file(path: str | Path) -> Policy:
    """Read and validate a policy file; errors name the file as given."""
    return load_policy_text(read_policy_file(path), str(path))
