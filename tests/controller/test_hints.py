"""Category hints from Debian sections and freedesktop categories."""

from __future__ import annotations

import pytest

from controller.hints import VOCABULARY, category_hints


@pytest.mark.parametrize(
    ("section", "categories", "expected"),
    [
        ("games", [], ["game"]),
        ("contrib/games", [], ["game"]),
        ("video", [], ["video"]),
        ("sound", [], ["music"]),
        ("", ["Game", "ArcadeGame"], ["game"]),
        ("", ["CardGame"], ["game"]),
        ("", ["AudioVideo", "Player"], ["video"]),
        ("", ["TV"], ["video"]),
        ("", ["Audio", "Music"], ["music"]),
        ("", ["Network", "InstantMessaging"], ["chat"]),
        ("", ["IRCClient"], ["chat"]),
        ("", ["Office", "Finance"], ["office", "stock"]),
        ("", ["Spreadsheet"], ["office"]),
        ("", ["WordProcessor", "Presentation"], ["office"]),
        ("sound", ["AudioVideo", "Audio"], ["music", "video"]),
        ("games", ["game"], ["game"]),  # case does not matter, no repeats
        ("utils", ["System", "TerminalEmulator"], []),
        ("", [], []),
    ],
)
def test_category_hints(section: str, categories: list[str], expected: list[str]) -> None:
    assert category_hints(section, categories, "pkg", "pkg") == expected


def test_hints_use_the_product_vocabulary_only() -> None:
    every = category_hints("games", ["Video", "Music", "Chat", "Finance", "Office"], "x", "x")
    assert set(every) <= set(VOCABULARY)
    assert every == sorted(every)


def test_names_alone_give_no_hint() -> None:
    """Names (e.g. 微信, steam) are the policy catalogue's business, not a hint."""
    assert category_hints("", [], "steam", "steam") == []
