"""Linux back end of the software collector: dpkg packages, desktop applications, Flatpak apps and snaps.

Desktop applications come from the system's application folders first, then from each user's
``~/.local/share/applications`` (where per-user installers, Wine and AppImage integration put theirs);
an id already seen in an earlier folder is not listed again.

No subprocess: every source is read from its files, so a full scan takes milliseconds and can run
whenever the install locations change.
"""

from __future__ import annotations

from agent.collectors import Roots
from agent.collectors._bundles_linux import flatpak_apps, snaps
from agent.collectors._desktop_linux import desktop_applications
from agent.collectors._dpkg_linux import dpkg_packages
from agent.collectors._install_locations import user_application_dirs
from protos.counterguard.v1 import facts_pb2


def collect_software(roots: Roots) -> list[facts_pb2.SoftwareItem]:
    """Everything installed, from every source this platform has (unsorted)."""
    return [
        *dpkg_packages(roots),
        *desktop_applications(roots.application_dirs + user_application_dirs(roots)),
        *flatpak_apps(roots.flatpak_dirs),
        *snaps(roots.snap_dir),
    ]
