"""The session channel's messages: what is accepted, and what is refused with which reason."""

from __future__ import annotations

import json

import pytest

from agent.session import protocol
from agent.session.protocol import HELPER_TYPES, SERVICE_TYPES, ProtocolError, decode, encode, message


def raw(**fields: object) -> bytes:
    return json.dumps(fields).encode("utf-8")


def sample(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "v": 1, "type": "sample", "session": "3", "user": "zhang", "idle_seconds": 12.5, "idle_source": "x11",
        "foreground": {"category": "game", "pattern_id": "qqgame", "executable": "QQGame.exe", "pid": 4242,
                       "title": ""}}
    fields.update(changes)
    return fields


def test_messages_round_trip_with_chinese_text_as_is() -> None:
    notice = message("notice", "3", "zhang", key="k1", title="工作时间请勿运行游戏", body="QQ游戏 · 14:05 · R11.6")

    frame = encode(notice)

    assert "工作时间".encode() in frame, "non-ASCII text is sent as UTF-8, not escaped"
    assert decode(frame, SERVICE_TYPES) == notice
    assert decode(raw(**sample()), HELPER_TYPES)["foreground"]["category"] == "game"
    assert decode(raw(**sample(idle_seconds=None, foreground=None)), HELPER_TYPES)["idle_seconds"] is None


def test_fields_a_newer_helper_adds_are_ignored() -> None:
    assert decode(raw(**sample(battery="low")), HELPER_TYPES)["battery"] == "low"


@pytest.mark.parametrize(("frame", "reason"), [
    (b"\xff\xfe", "not a JSON message"),
    (b"{\"v\": 1,", "not a JSON message"),
    (b"[1, 2]", "a message must be a JSON object, got list"),
    (raw(**{k: v for k, v in sample().items() if k != "session"}), "message: field 'session' is missing"),
    (raw(**sample(v=2)), "protocol version 2 is not spoken here (version 1)"),
    (raw(**sample(v=True)), "message: field 'v' must be int, got bool"),
    (raw(**sample(type="config")), "unexpected message type 'config' (expected one of hello, sample, shown)"),
    (raw(**sample(idle_seconds="12")), "sample: field 'idle_seconds' must be int/float/null, got str"),
    (raw(**sample(idle_seconds=-1)), "sample: idle_seconds must not be negative, got -1"),
    (b'{"v": 1, "type": "sample", "session": "3", "user": "u", "idle_seconds": NaN, "idle_source": "",'
     b' "foreground": null}', "not a JSON message (NaN is not a number)"),
    (raw(**sample(foreground={"category": "game"})), "sample.foreground: field 'pattern_id' is missing"),
    (raw(**sample(foreground={**sample()["foreground"], "pid": "4242"})),  # type: ignore[dict-item]
     "sample.foreground: field 'pid' must be int, got str"),
    (raw(**sample(user="x" * 2000)), "message: field 'user' is longer than 1024 characters"),
    (raw(v=1, type="hello", session="3", user="zhang", platform="linux"), "hello: field 'pid' is missing"),
])
def test_malformed_messages_are_refused_with_the_reason(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode(frame, HELPER_TYPES)
    assert str(refused.value).startswith(reason)


def test_a_config_with_a_bad_title_pattern_is_refused() -> None:
    config = message("config", "3", "zhang", sample_interval=2, foreground=True, report_titles=False,
                     title_patterns=[{"id": "taobao", "category": "shopping", "title_contains": ["淘宝", 7],
                                      "executables": []}])

    with pytest.raises(ProtocolError, match=r"config.title_patterns\[0\]: field 'title_contains' must be a list of "
                                            r"strings"):
        decode(encode(config), SERVICE_TYPES)


def test_the_frame_limits_leave_room_for_a_real_policy() -> None:
    from controller.policy.catalogue import CatalogueMatcher
    from controller.policy.loader import load_policy_text
    from policies import DEFAULT_POLICY

    policy = load_policy_text(DEFAULT_POLICY.read_text(encoding="utf-8"), "default.yaml")
    patterns = [{"id": p.id, "category": p.category, "title_contains": list(p.title_contains),
                 "executables": list(p.executables)} for p in CatalogueMatcher(policy.catalogue).title_patterns()]
    config = message("config", "3", "zhang", sample_interval=2, foreground=True, report_titles=False,
                     title_patterns=patterns)

    assert len(patterns) > 20
    assert len(encode(config)) < protocol.MAX_FROM_SERVICE // 4
    assert len(encode(message("sample", "3", "DOMAIN\\zhang", **{k: v for k, v in sample().items()
                                                                  if k not in ("v", "type", "session", "user")}))) \
        < protocol.MAX_FROM_HELPER // 8
