"""Loading policy files: precise errors (file:line: field: what) for malformed and hostile files."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from controller.errors import InvalidInput
from controller.policy.loader import MAX_BYTES, MAX_DEPTH, PolicyError, load_policy_file, load_policy_text
from controller.policy.model import Category, RuleKind
from policies import DEFAULT_POLICY, EXAMPLES, shipped_policies

MINIMAL = """\
id: test
version: "1"
name: Test policy
timetable:
  periods:
    - {start: "09:00", end: "12:00"}
    - {start: 13:00, end: 17:00}
rules:
  - id: games
    kind: forbidden_program
    ref: R11.6
    title: 游戏
    categories: [game]
"""


def errors(text: str, source: str = "policies/x.yaml") -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(textwrap.dedent(text), source)
    assert isinstance(caught.value, InvalidInput)
    return str(caught.value).splitlines()


def test_a_minimal_policy_loads_and_unquoted_times_are_times_not_base_60_numbers() -> None:
    policy = load_policy_text(MINIMAL, "x.yaml")

    assert policy.id == "test" and policy.rules[0].categories == [Category.GAME]
    # YAML 1.1 reads 13:00 as 780 (base 60), which pydantic would take as 00:13:00.
    assert [(p.start, p.end) for p in policy.timetable.periods] == [
        (dt.time(9), dt.time(12)),
        (dt.time(13), dt.time(17)),
    ]


def test_unknown_field_names_file_line_and_field_with_a_hint() -> None:
    text = MINIMAL + "    categroies: [video]\n"

    assert errors(text) == [
        "policies/x.yaml:14: rules[0].categroies: unknown field 'categroies' (did you mean 'categories'?)"
    ]


def test_a_misspelt_category_lists_the_allowed_ones() -> None:
    text = MINIMAL.replace("categories: [game]", "categories:\n      - video\n      - gmae")

    (line,) = errors(text)
    assert line.startswith("policies/x.yaml:15: rules[0].categories[1]: 'gmae' is not one of game, video, music")


def test_wrong_types_are_errors_not_coercions() -> None:
    text = MINIMAL + '    grace_minutes: "30"\n    enabled: yes\n'

    assert errors(text) == [
        "policies/x.yaml:14: rules[0].grace_minutes: Input should be a valid integer (got '30')",
        "policies/x.yaml:15: rules[0].enabled: Input should be a valid boolean (got 'yes')",
    ]


def test_a_list_where_a_mapping_belongs() -> None:
    (line,) = errors(MINIMAL.replace("timetable:\n  periods:", "timetable:\n  - periods:"))

    assert line == "policies/x.yaml:4: timetable: should be a mapping (key: value), not a list"


def test_overlapping_periods() -> None:
    text = MINIMAL.replace('{start: "09:00", end: "12:00"}', '{start: "09:00", end: "13:30"}')

    assert errors(text) == ["policies/x.yaml:5: timetable.periods: periods 09:00–13:30 and 13:00–17:00 overlap"]


def test_a_period_in_a_wrong_format() -> None:
    (line,) = errors(MINIMAL.replace('"09:00"', "9:00"))

    assert line == "policies/x.yaml:6: timetable.periods[0].start: '9:00' is not a time of day (write HH:MM, e.g. 09:00)"


def test_bad_time_zone() -> None:
    assert errors("timezone: Asia/Beijing\n" + MINIMAL) == [
        "policies/x.yaml:1: timezone: unknown time zone 'Asia/Beijing' (use an IANA name such as Asia/Shanghai)"
    ]


def test_a_missing_field_points_at_its_mapping() -> None:
    text = MINIMAL.replace("    ref: R11.6\n", "")

    assert errors(text) == ["policies/x.yaml:9: rules[0].ref: required, but missing"]


def test_a_rule_without_what_its_kind_needs() -> None:
    text = MINIMAL.replace("    categories: [game]\n", "")

    assert errors(text) == ["policies/x.yaml:9: rules[0]: a forbidden_program rule needs categories"]


def test_several_errors_are_all_reported_in_file_order() -> None:
    text = MINIMAL.replace('version: "1"', "version: 1").replace("kind: forbidden_program", "kind: forbidden")
    text = "timezone: Nowhere/City\n" + text + "colour: red\n"

    lines = errors(text)

    assert [line.split(": ")[0] for line in lines] == [
        "policies/x.yaml:1",
        "policies/x.yaml:3",
        "policies/x.yaml:11",
        "policies/x.yaml:15",
    ]
    assert "timezone" in lines[0] and "version" in lines[1] and "rules[0].kind" in lines[2] and "colour" in lines[3]


def test_penalty_in_a_section_the_scoring_does_not_have() -> None:
    text = MINIMAL + "    penalty: {section: 纪律, points: 5}\nscoring:\n  sections:\n    - {name: 工作纪律, points: 30}\n"

    (line,) = errors(text)
    assert "rule 'games': penalty section '纪律' is not one of the scoring sections (工作纪律)" in line


# ----------------------------------------------------------------------------- hostile YAML


def test_a_yaml_bomb_is_refused_at_its_first_anchor() -> None:
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    bomb += "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(8))

    assert errors(bomb) == ["policies/x.yaml:1: anchors (&a) are not allowed in a policy file"]


def test_aliases_are_refused() -> None:
    # An alias to an anchor is refused too (the anchor is, first); an alias alone is not even valid YAML.
    assert errors("id: *x\n")[0].startswith("policies/x.yaml:1: ")
    assert errors(MINIMAL + "x: &y 1\nz: *y\n") == ["policies/x.yaml:14: anchors (&y) are not allowed in a policy file"]


def test_merge_keys_are_just_unknown_fields() -> None:
    (line,) = errors(MINIMAL + "<<: {a: 1}\n")

    assert line.startswith("policies/x.yaml:14: <<: unknown field '<<'")


@pytest.mark.parametrize(
    "document",
    [
        "!!python/object/apply:os.system ['touch /tmp/pwned']\n",
        "id: !!python/name:os.system\n",
        "id: !!binary aGVsbG8=\n",
        "id: !custom x\n",
        "rules: !!set {a, b}\n",
    ],
)
def test_tags_are_refused_and_never_constructed(document: str, tmp_path: Path) -> None:
    (line,) = errors(document)

    assert "tags (" in line and "are not allowed in a policy file" in line
    assert not Path("/tmp/pwned").exists()


def test_duplicate_keys_name_both_lines() -> None:
    text = MINIMAL.replace("    title: 游戏\n", "    title: 游戏\n    title: 玩游戏\n")

    assert errors(text) == ["policies/x.yaml:13: rules[0].title: duplicate key 'title' (first on line 12)"]


@pytest.mark.parametrize(("key", "shown"), [("1", "1"), ("true", "true"), ("null", "null"), ("[a, b]", "a collection")])
def test_keys_must_be_text(key: str, shown: str) -> None:
    (line,) = errors(MINIMAL + f"{key}: x\n")

    assert line.startswith("policies/x.yaml:14: keys must be text;")
    assert repr(shown) in line


def test_quoted_keys_are_text() -> None:
    policy = load_policy_text(MINIMAL + 'catalogue:\n  sections:\n    "1": game\n', "x.yaml")

    assert policy.catalogue.sections == {"1": Category.GAME}


def test_a_huge_text_is_refused_before_parsing() -> None:
    text = MINIMAL + "description: " + "x" * MAX_BYTES + "\n"

    (line,) = errors(text)
    assert line.startswith("policies/x.yaml: the file is ") and f"at most {MAX_BYTES} bytes" in line


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.write(MINIMAL.encode())
        handle.truncate(50 * MAX_BYTES)  # sparse: 50 MiB

    with pytest.raises(PolicyError, match=r"huge.yaml: the file is larger than 1048576 bytes"):
        load_policy_file(path)


def test_deep_nesting_is_refused() -> None:
    deep = "description: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    (line,) = errors(MINIMAL + deep)
    assert line == f"policies/x.yaml:14: nested more than {MAX_DEPTH} levels deep"

    very_deep = "description: " + "[" * 100_000 + "]" * 100_000 + "\n"
    (line,) = errors(MINIMAL + very_deep)  # no RecursionError
    assert "nested more than" in line


def test_a_number_too_long_to_convert() -> None:
    (line,) = errors(MINIMAL + "    grace_minutes: " + "9" * 5000 + "\n")

    assert line.startswith("policies/x.yaml:14: rules[0].grace_minutes: the number 99999")


def test_not_yaml() -> None:
    (line,) = errors(MINIMAL + "rules: [unclosed\n")
    assert line.startswith("policies/x.yaml:") and "not valid YAML" in line


def test_several_documents_are_refused() -> None:
    (line,) = errors(MINIMAL + "---\nid: other\n")
    assert "not valid YAML" in line and "single document" in line


@pytest.mark.parametrize(("text", "message"), [("", "the file is empty"), ("- a\n- b\n", "a policy must be a mapping")])
def test_empty_or_not_a_mapping(text: str, message: str) -> None:
    (line,) = errors(text)
    assert message in line


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gbk.yaml"
    path.write_bytes(MINIMAL.encode() + "name: 政务中心\n".encode("gbk"))

    with pytest.raises(PolicyError, match=r"gbk.yaml:14: not UTF-8 text"):
        load_policy_file(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nowhere.yaml: cannot read the file: No such file"):
        load_policy_file(tmp_path / "nowhere.yaml")


def test_an_unknown_calendar_subdivision() -> None:
    (line,) = errors(MINIMAL + "calendar:\n  subdivision: BJ\n")
    assert line.startswith("policies/x.yaml:15: calendar.subdivision: 'BJ' is not a known subdivision")


# ----------------------------------------------------------------------------- the shipped policies


@pytest.mark.parametrize("path", shipped_policies(), ids=lambda p: p.name)
def test_every_shipped_policy_file_validates(path: Path) -> None:
    policy = load_policy_file(path)

    assert policy.rules and policy.catalogue.entries
    assert all(rule.ref.startswith(("R3", "R9", "R11", "R12")) for rule in policy.rules)


def test_the_examples_carry_the_default_catalogue() -> None:
    default = load_policy_file(DEFAULT_POLICY)
    for path in EXAMPLES.glob("*.yaml"):
        assert load_policy_file(path).catalogue == default.catalogue, f"{path.name}: copy the default's catalogue"


def test_the_default_policy_enforces_every_rule_of_rules_md() -> None:
    policy = load_policy_file(DEFAULT_POLICY)
    rules = {rule.id: rule for rule in policy.rules}

    assert {rule.kind for rule in policy.rules} == set(RuleKind)
    refs = {rule.ref for rule in policy.rules}
    for ref in ("R11.6; R9 7(2)14", "R11.4; R9 7(2)13", "R11.2", "R11.8", "R11.1; R11.3", "R11.9", "R11.10",
                "R12 3(4)2", "R3 7(3)"):
        assert ref in refs
    assert any(ref.startswith("R11.7") for ref in refs)
    # Regulation 12's working time and regulation 9's points.
    assert [(p.start.hour, p.end.hour) for p in policy.timetable.periods] == [(9, 12), (13, 17)]
    assert [(s.name, s.points, s.floor) for s in policy.scoring.sections] == [
        ("规范服务", 30, "none"), ("工作纪律", 30, "none"), ("工作业绩", 30, "zero"), ("窗口互评", 10, "zero")
    ]
    assert (rules["games-video-music"].penalty.section, rules["games-video-music"].penalty.points) == ("工作纪律", 5)
    assert (rules["powered-on-after-hours"].penalty.section, rules["powered-on-after-hours"].penalty.points) == ("工作纪律", 1)
    assert {r.penalty.points for r in policy.rules if "R9 7(1)9" in r.ref} == {5}
    # Chat is its own category and allowed by default.
    forbidden = {c for r in policy.rules if r.kind is RuleKind.FORBIDDEN_PROGRAM for c in r.categories}
    assert Category.CHAT not in forbidden and {Category.GAME, Category.VIDEO, Category.MUSIC, Category.SHOPPING, Category.STOCK} <= forbidden
    assert rules["online-shopping"].attribute_to_owner


def test_the_money_example() -> None:
    policy = load_policy_file(EXAMPLES / "r12-money.yaml")
    rule = next(r for r in policy.rules if r.ref == "R12 3(4)2")

    assert (policy.scoring.scheme, policy.scoring.escalate_after) == ("money", 3)
    assert rule.attribute_to_owner and rule.penalty.money == 50
    assert set(rule.categories) == {Category.SHOPPING, Category.CHAT, Category.GAME, Category.VIDEO}


def test_the_summer_example() -> None:
    policy = load_policy_file(EXAMPLES / "r3-summer.yaml")

    assert [(p.start, p.end) for p in policy.timetable.periods] == [(dt.time(8), dt.time(12)), (dt.time(14), dt.time(18))]
    (summer,) = policy.timetable.seasonal
    assert (summer.start, summer.end) == ("05-01", "09-30")
    assert any(Category.STOCK in r.categories and r.ref.startswith("R3 7(3)") for r in policy.rules)
