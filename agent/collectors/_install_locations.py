"""Where software gets installed: the locations the install watcher watches, per platform.

A :class:`Location` is one directory and what counts as a change there: anything below it
(``recursive``), or only its direct entries, optionally only those with the given ``names`` (in dpkg's
folder only ``status`` says what is installed; ``status-old``, the lock files and ``info/`` change on
every run). ``rescan`` says whether a change means "rescan the software" or only "look again at which
locations exist" (the password file: a new user's home).

Linux: dpkg's database, the freedesktop application folders (system, ``/usr/local``, the Flatpak and
snap exports, the configured extras), every user's ``~/.local/share/applications``, ``/opt``, each
Flatpak installation's ``app`` folder and ``/snap``, with each app's own folder there (where the
``current`` link changes when an install finishes). Users are the accounts of ``<etc>/passwd`` in the
regular-user id range whose home folder exists.

Windows: both Program Files folders and the all-users Start Menu, named by the environment
(``ProgramFiles``, ``ProgramFiles(x86)``, ``ProgramW6432``, ``ProgramData``; looked up ignoring case, as
Windows does). The Program Files folders are watched without their subfolders: a new program's folder
appearing is the signal, the files an installer or a running program writes inside are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath

from agent.collectors import Roots
from agent.collectors._files import list_dir, read_text

# Debian's regular-user range (adduser's FIRST_UID..LAST_UID); system accounts and nobody (65534) are left out.
_USER_UIDS = range(1000, 60000)
_WINDOWS_PROGRAM_FOLDERS = ("ProgramFiles", "ProgramFiles(x86)", "ProgramW6432")


@dataclass(frozen=True)
class Location:
    """A directory and which changes in it count (see the module docstring)."""

    path: PurePath
    recursive: bool = False
    names: frozenset[str] = frozenset()  # empty: every entry
    rescan: bool = True


def user_homes(roots: Roots) -> list[Path]:
    """The existing home folders of the regular users in ``<etc>/passwd``, in file order."""
    homes: list[Path] = []
    for line in read_text(roots.etc / "passwd").splitlines():
        parts = line.split(":")
        if len(parts) < 7 or not parts[2].isdigit() or int(parts[2]) not in _USER_UIDS:
            continue
        home = Path(parts[5])
        if home.is_absolute() and home != Path("/") and home.is_dir() and home not in homes:
            homes.append(home)
    return homes


def user_application_dirs(roots: Roots) -> tuple[Path, ...]:
    """Every user's own freedesktop application folder (``~/.local/share/applications``), existing or not."""
    return tuple(home / ".local/share/applications" for home in user_homes(roots))


def linux_locations(roots: Roots) -> list[Location]:
    """The install locations of a Linux machine (those that do not exist yet included)."""
    app_folders = [*roots.application_dirs, *user_application_dirs(roots)]
    bundle_apps = [flatpak / "app" for flatpak in roots.flatpak_dirs]
    return [
        Location(roots.dpkg_status.parent, names=frozenset({roots.dpkg_status.name})),
        *(Location(folder, recursive=True) for folder in app_folders),
        *(Location(folder) for folder in roots.opt_dirs),
        *(Location(folder) for folder in (*bundle_apps, roots.snap_dir)),
        *(Location(app, names=frozenset({"current"})) for folder in (*bundle_apps, roots.snap_dir)
          for app in list_dir(folder) if app.is_dir() and not app.is_symlink()),
        Location(roots.etc, names=frozenset({"passwd"}), rescan=False),
    ]


def windows_locations(environ: Mapping[str, str]) -> list[Location]:
    """The install locations of a Windows machine, from its environment; unset variables are skipped."""
    folded = {key.casefold(): value for key, value in environ.items() if value}
    programs = {PureWindowsPath(folded[name.casefold()]) for name in _WINDOWS_PROGRAM_FOLDERS
                if name.casefold() in folded}
    locations = [Location(folder) for folder in sorted(programs, key=str)]
    if "programdata" in folded:
        start_menu = PureWindowsPath(folded["programdata"], "Microsoft", "Windows", "Start Menu")
        locations.append(Location(start_menu, recursive=True))
    return locations
