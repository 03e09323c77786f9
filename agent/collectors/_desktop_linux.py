"""Applications that freedesktop ``.desktop`` files announce (what a user sees in the start menu).

Only the ``[Desktop Entry]`` group counts, only ``Type=Application``, and ``Hidden=true`` means deleted.
The item's name is the desktop file id: the path below the applications folder with ``/`` turned into
``-`` (``kde4/kate.desktop`` → ``kde4-kate.desktop``). When two folders hold the same id, the folder listed
first in ``Roots.application_dirs`` wins, as ``XDG_DATA_DIRS`` order does for the desktop. The install
date is when the file arrived on this disk (see ``_files.arrival_time``), not the date it carries from
its package.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from agent.collectors._files import arrival_time, read_text, timestamp
from protos.counterguard.v1 import facts_pb2

_FIELD_CODE = re.compile(r"%[fFuUdDnNickvm%]")
_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def parse_desktop_entry(text: str) -> dict[str, str]:
    """The keys of the ``[Desktop Entry]`` group (first occurrence of each key wins)."""
    entry: dict[str, str] = {}
    in_group = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            in_group = line == "[Desktop Entry]"
        elif in_group and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entry.setdefault(key.strip(), value.strip())
    return entry


def _flatpak_command(tokens: list[str]) -> str:
    """For ``flatpak run [--command=X] ... <app-id>``: the command, else the application id."""
    for token in tokens:
        if token.startswith("--command="):
            return token.partition("=")[2]
    after_run = tokens[tokens.index("run") + 1 :] if "run" in tokens else []
    return next((token for token in after_run if not token.startswith("-")), "flatpak")


def executable_of(exec_line: str) -> str:
    """The program an ``Exec=`` line starts, as a basename: field codes and ``env VAR=...`` prefixes dropped."""
    try:
        tokens = shlex.split(exec_line)
    except ValueError:  # unbalanced quotes: take the words as they are
        tokens = exec_line.split()
    tokens = [token for token in tokens if not _FIELD_CODE.fullmatch(token)]
    if tokens and os.path.basename(tokens[0]) == "env":
        tokens = [token for token in tokens[1:] if not token.startswith("-")]
    while tokens and _ENV_ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    if not tokens:
        return ""
    program = os.path.basename(tokens[0])
    return os.path.basename(_flatpak_command(tokens)) if program == "flatpak" else program


def _categories(value: str) -> list[str]:
    """``"Game;ArcadeGame;"`` → ``["Game", "ArcadeGame"]``."""
    return [category.strip() for category in value.split(";") if category.strip()]


def _desktop_item(path: Path, file_id: str) -> facts_pb2.SoftwareItem | None:
    """The item one ``.desktop`` file describes, or ``None`` when it is not a visible application."""
    entry = parse_desktop_entry(read_text(path))
    if entry.get("Type") != "Application" or entry.get("Hidden", "").lower() == "true":
        return None
    moment = arrival_time(path)
    return facts_pb2.SoftwareItem(
        source=facts_pb2.SOFTWARE_SOURCE_DESKTOP_ENTRY,
        name=file_id,
        display_name=entry.get("Name") or entry.get("Name[zh_CN]", ""),
        install_date=timestamp(moment) if moment is not None else None,
        categories=_categories(entry.get("Categories", "")),
        executable=executable_of(entry.get("Exec", "")),
        install_location=str(path),
    )


def _desktop_files(folder: Path) -> list[tuple[str, Path]]:
    """``(desktop file id, path)`` for every ``.desktop`` file below ``folder``, sorted by id."""
    found: list[tuple[str, Path]] = []
    for directory, subdirs, files in os.walk(folder, onerror=lambda _error: None):
        subdirs.sort()
        for name in files:
            if name.endswith(".desktop"):
                path = Path(directory) / name
                found.append((path.relative_to(folder).as_posix().replace("/", "-"), path))
    return sorted(found)


def desktop_applications(folders: tuple[Path, ...]) -> list[facts_pb2.SoftwareItem]:
    """Every application the desktop files in ``folders`` announce, one per desktop file id."""
    seen: set[str] = set()
    items: list[facts_pb2.SoftwareItem] = []
    for folder in folders:
        for file_id, path in _desktop_files(folder):
            if file_id in seen:
                continue
            seen.add(file_id)  # a hidden entry still masks the same id in later folders
            item = _desktop_item(path, file_id)
            if item is not None:
                items.append(item)
    return items
