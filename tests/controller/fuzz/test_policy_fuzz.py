"""Property-based fuzzing of the policy loader with mutations of the shipped default policy.

Lines deleted, duplicated, swapped or re-indented, scalars changed, random Unicode inserted, deep
nesting: the loader either returns a policy or raises :class:`PolicyError` whose every line reads
``FILE:LINE: [FIELD: ]message`` with a line inside the file; never any other exception.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.policy.loader import PolicyError, load_policy_text
from policies import DEFAULT_POLICY

SOURCE = "policies/default.yaml"
LINES = DEFAULT_POLICY.read_text(encoding="utf-8").splitlines()
ISSUE = re.compile(rf"^{re.escape(SOURCE)}:(\d+): (\S.*)$")
# A line with ``key: value`` whose value can be replaced (the text after the first ": ").
SCALAR_LINES = [i for i, line in enumerate(LINES) if re.match(r"^\s*(- )?[\w-]+: \S", line)]

unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
replacement = st.one_of(
    unicode_text,
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["true", "no", "null", "~", "[", "]", "{", "}", "- x", "&a", "*a", "!!python/object:os.system",
                     "'", '"', "|", ">", "13:00", "25:61", "2026-02-30", "-1", "1e999", "0x1F", "!tag x", "%TAG"]),
)


@st.composite
def mutated_policy(draw: st.DrawFn) -> str:
    """The default policy with one to three changes."""
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(lines) - 1))
        change = draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "scalar", "insert", "nest"]))
        if change == "delete":
            del lines[where]
        elif change == "duplicate":
            lines.insert(where, lines[where])
        elif change == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[where], lines[other] = lines[other], lines[where]
        elif change == "indent":
            lines[where] = " " * draw(st.integers(0, 12)) + lines[where].lstrip()
        elif change == "scalar":
            at = draw(st.sampled_from(SCALAR_LINES)) if SCALAR_LINES else where
            if at < len(lines) and ": " in lines[at]:
                key = lines[at].split(": ", 1)[0]
                lines[at] = f"{key}: {draw(replacement)}"
        elif change == "insert":
            column = draw(st.integers(0, len(lines[where])))
            lines[where] = lines[where][:column] + draw(unicode_text) + lines[where][column:]
        else:
            depth = draw(st.integers(30, 200))
            lines.insert(where, draw(st.sampled_from([
                "deep: " + "[" * depth + "]" * depth,
                "deep: " + "{a: " * depth + "1" + "}" * depth,
                "\n".join("  " * level + f"k{level}:" for level in range(depth)),
            ])))
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


@settings(max_examples=80)
@given(text=mutated_policy())
def test_a_mutated_default_policy_loads_or_fails_with_located_messages(text: str) -> None:
    try:
        load_policy_text(text, SOURCE)
    except PolicyError as error:
        last_line = text.count("\n") + 1
        for line in str(error).splitlines():
            match = ISSUE.match(line)
            assert match, f"not FILE:LINE: message: {line!r}"
            assert 1 <= int(match.group(1)) <= last_line, line
        assert error.issues and all(issue.message.strip() for issue in error.issues)


def test_a_character_yaml_refuses_is_reported_on_its_line() -> None:
    text = "\n".join(LINES[:20]) + "\nname: a\x1fb\n"
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, SOURCE)
    assert str(caught.value) == (f"{SOURCE}:21: not valid YAML: the character U+001F is not allowed "
                                 "(special characters are not allowed)")
