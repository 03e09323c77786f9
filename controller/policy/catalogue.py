"""The software catalogue, compiled for matching: which category a process, package or title is.

Lookup tables are built once per policy; exact names (executables, packages, desktop ids) are
dictionary look-ups, substrings (display names, publishers, titles) a scan of a short list, and
software answers are memoised, since the rules engine asks for every fact of every snapshot.

Precedence, most specific first: a named entry (package or desktop id, then executable, then
display-name substring, then publisher substring), then the Debian ``Section``, then the
freedesktop ``Categories`` (when several of an item's categories are mapped, the one listed first
in the policy's ``desktop_categories`` wins, so ``Audio`` can be listed before ``AudioVideo``).
All comparisons are case-insensitive and literal.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from controller.policy.model import Catalogue, CatalogueEntry, Category
from protos.counterguard.v1 import agent_pb2, facts_pb2

_CACHE_LIMIT = 8192
_PATH_SEPARATORS = re.compile(r"[\\/]")


@dataclass(frozen=True)
class CatalogueHit:
    """What a program, package or title was recognised as.

    ``entry_id`` is the catalogue entry, or ``None`` when only a Debian section or a desktop
    category matched (``name`` is then that section or category). ``matched_on`` says what matched,
    e.g. ``executable:qqgame.exe``, ``section:games``, ``title:淘宝``: evidence for a violation.
    """

    entry_id: str | None
    name: str
    category: Category
    matched_on: str


def _key(value: str) -> str:
    return value.strip().casefold()


def basename(path: str) -> str:
    """The last component of a Windows or POSIX path, as given."""
    return _PATH_SEPARATORS.split(path.strip())[-1]


def _desktop_key(value: str) -> str:
    key = _key(basename(value))
    return key[: -len(".desktop")] if key.endswith(".desktop") else key


def _package_key(value: str) -> str:
    """``gnome-mines:amd64`` → ``gnome-mines``; a flatpak ref ``app/org.x.Y/x86_64/stable`` → ``org.x.y``."""
    key = _key(value)
    if key.startswith(("app/", "runtime/")) and key.count("/") >= 1:
        key = key.split("/")[1]
    return key.split(":", 1)[0]


class CatalogueMatcher:
    """A catalogue compiled for fast, repeated matching."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._executables: dict[str, CatalogueEntry] = {}
        self._packages: dict[str, CatalogueEntry] = {}
        self._desktop_ids: dict[str, CatalogueEntry] = {}
        self._display_names: list[tuple[str, CatalogueEntry]] = []
        self._publishers: list[tuple[str, CatalogueEntry]] = []
        self._titles: list[tuple[str, CatalogueEntry]] = []
        for entry in catalogue.entries:  # the first entry naming a thing keeps it
            for value in entry.match.executables:
                self._executables.setdefault(_key(basename(value)), entry)
            for value in entry.match.packages:
                self._packages.setdefault(_package_key(value), entry)
            for value in entry.match.desktop_ids:
                self._desktop_ids.setdefault(_desktop_key(value), entry)
            self._display_names += [(_key(value), entry) for value in entry.match.display_names if value.strip()]
            self._publishers += [(_key(value), entry) for value in entry.match.publishers if value.strip()]
            self._titles += [(_key(value), entry) for value in entry.match.title_contains if value.strip()]
        # The longest substring first: "哔哩哔哩" decides before a shorter, vaguer one.
        for table in (self._display_names, self._publishers, self._titles):
            table.sort(key=lambda pair: -len(pair[0]))
        self._sections = {_key(section): category for section, category in catalogue.sections.items()}
        self._desktop_categories = {
            _key(name): (rank, name, category)
            for rank, (name, category) in enumerate(catalogue.desktop_categories.items())
        }
        self._software_cache: dict[tuple[object, ...], CatalogueHit | None] = {}

    # ------------------------------------------------------------------ processes and titles

    def match_executable(self, executable: str) -> CatalogueHit | None:
        """A catalogue entry naming the basename of ``executable`` (a path or a bare name)."""
        if not executable.strip():
            return None
        key = _key(basename(executable))
        entry = self._executables.get(key)
        return _hit(entry, f"executable:{key}") if entry else None

    def match_process(self, name: str, executable: str = "") -> CatalogueHit | None:
        """A running program by its executable's basename, else by its process name."""
        return self.match_executable(executable) or self.match_executable(name)

    def match_title(self, title: str) -> CatalogueHit | None:
        """The entry whose ``title_contains`` substring occurs in a window title."""
        key = _key(title)
        if not key:
            return None
        for needle, entry in self._titles:
            if needle in key:
                return _hit(entry, f"title:{needle}")
        return None

    # ------------------------------------------------------------------ installed software

    def match_software(
        self,
        source: int | str = 0,
        name: str = "",
        display_name: str = "",
        publisher: str = "",
        section: str = "",
        categories: Iterable[str] = (),
        executable: str = "",
    ) -> CatalogueHit | None:
        """What an installed item (package, desktop entry, registry program) is, or ``None``.

        ``source`` is the item's ``SoftwareSource``: a desktop entry's name is tried as a desktop
        id first, any other name as a package first.
        """
        categories = tuple(categories)
        cache_key = (source, name, display_name, publisher, section, categories, executable)
        if cache_key in self._software_cache:
            return self._software_cache[cache_key]
        hit = self._software(source, name, display_name, publisher, section, categories, executable)
        if len(self._software_cache) >= _CACHE_LIMIT:
            self._software_cache.clear()
        self._software_cache[cache_key] = hit
        return hit

    def match_item(self, item: facts_pb2.SoftwareItem) -> CatalogueHit | None:
        """:meth:`match_software` for a ``SoftwareItem`` fact."""
        return self.match_software(
            item.source, item.name, item.display_name, item.publisher, item.section, item.categories, item.executable
        )

    def _software(
        self,
        source: int | str,
        name: str,
        display_name: str,
        publisher: str,
        section: str,
        categories: tuple[str, ...],
        executable: str,
    ) -> CatalogueHit | None:
        return (
            self._by_name(source, name)
            or self.match_executable(executable)
            or _substring(self._display_names, display_name, "display_name")
            or _substring(self._publishers, publisher, "publisher")
            or self._by_section(section)
            or self._by_categories(categories)
        )

    def _by_name(self, source: int | str, name: str) -> CatalogueHit | None:
        if not name.strip():
            return None
        package, desktop = _package_key(name), _desktop_key(name)
        lookups = [(self._packages, package, "package"), (self._desktop_ids, desktop, "desktop_id")]
        if source in (facts_pb2.SOFTWARE_SOURCE_DESKTOP_ENTRY, "SOFTWARE_SOURCE_DESKTOP_ENTRY", "desktop_entry"):
            lookups.reverse()
        for table, key, label in lookups:
            entry = table.get(key)
            if entry is not None:
                return _hit(entry, f"{label}:{key}")
        return None

    def _by_section(self, section: str) -> CatalogueHit | None:
        # Debian sections may carry an archive area: contrib/games, non-free/games, universe/games.
        key = _key(section).rsplit("/", 1)[-1]
        category = self._sections.get(key) if key else None
        return CatalogueHit(None, key, category, f"section:{key}") if category else None

    def _by_categories(self, categories: tuple[str, ...]) -> CatalogueHit | None:
        found = [self._desktop_categories[_key(c)] for c in categories if _key(c) in self._desktop_categories]
        if not found:
            return None
        _, name, category = min(found)
        return CatalogueHit(None, name, category, f"desktop_category:{name}")

    # ------------------------------------------------------------------ for the agent

    def title_patterns(self, categories: Collection[Category] | None = None) -> list[agent_pb2.TitlePattern]:
        """The entries the agent needs to classify the foreground window, as ``TitlePattern``s.

        Every entry with title substrings or executables, or only those in ``categories`` (the
        categories a rule forbids) when given.
        """
        patterns = []
        for entry in self.catalogue.entries:
            if categories is not None and entry.category not in categories:
                continue
            if not (entry.match.title_contains or entry.match.executables):
                continue
            patterns.append(
                agent_pb2.TitlePattern(
                    id=entry.id,
                    category=entry.category.value,
                    title_contains=list(entry.match.title_contains),
                    executables=[basename(value) for value in entry.match.executables],
                )
            )
        return patterns


def _hit(entry: CatalogueEntry, matched_on: str) -> CatalogueHit:
    return CatalogueHit(entry.id, entry.name, entry.category, matched_on)


def _substring(table: list[tuple[str, CatalogueEntry]], value: str, label: str) -> CatalogueHit | None:
    key = _key(value)
    if not key:
        return None
    for needle, entry in table:
        if needle in key:
            return _hit(entry, f"{label}:{needle}")
    return None
