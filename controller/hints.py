"""Category hints for installed software, from the metadata packaging systems already carry.

A Debian ``Section:`` and freedesktop ``Categories=`` say what a program is for; this maps them
onto the product's vocabulary (game, video, music, shopping, chat, stock, office). These are
hints only: the policy's software catalogue, which also knows Chinese programs by name, decides.
"""

from __future__ import annotations

from collections.abc import Sequence

VOCABULARY = ("game", "video", "music", "shopping", "chat", "stock", "office")

# Debian sections ("games", or "contrib/games" outside main).
_SECTIONS = {"games": "game", "video": "video", "sound": "music"}

# freedesktop.org main and additional categories (compared case-insensitively).
_CATEGORIES = {
    "game": "game",
    "actiongame": "game",
    "adventuregame": "game",
    "arcadegame": "game",
    "boardgame": "game",
    "blocksgame": "game",
    "cardgame": "game",
    "kidsgame": "game",
    "logicgame": "game",
    "roleplaying": "game",
    "shooter": "game",
    "sportsgame": "game",
    "strategygame": "game",
    "audiovideo": "video",
    "video": "video",
    "tv": "video",
    "player": "video",
    "audio": "music",
    "music": "music",
    "chat": "chat",
    "instantmessaging": "chat",
    "ircclient": "chat",
    "finance": "stock",
    "office": "office",
    "wordprocessor": "office",
    "spreadsheet": "office",
    "presentation": "office",
}


def category_hints(section: str, categories: Sequence[str], name: str, executable: str) -> list[str]:
    """The product categories the package metadata suggests, sorted and without repeats.

    ``name`` and ``executable`` are accepted so callers pass everything they know; no hint is
    taken from them yet (names are the policy catalogue's business).
    """
    hints: set[str] = set()
    section_name = section.strip().lower().rsplit("/", 1)[-1]
    if section_name in _SECTIONS:
        hints.add(_SECTIONS[section_name])
    for category in categories:
        hint = _CATEGORIES.get(category.strip().lower())
        if hint:
            hints.add(hint)
    return sorted(hints)
