"""Linux back end of the antivirus collector: installed packages and their versions from dpkg's database.

The status file is parsed by ``_dpkg_linux`` (the software collector's parser), so "installed" means
the same here as in the software list. A package of a foreign architecture answers to both its plain
name and ``name:arch``.
"""

from __future__ import annotations

from agent.collectors import Roots
from agent.collectors._dpkg_linux import parse_status
from agent.collectors._files import read_text


def installed_packages(roots: Roots) -> dict[str, str]:
    """Installed dpkg packages, name → version (names case-folded)."""
    versions: dict[str, str] = {}
    for fields in parse_status(read_text(roots.dpkg_status)):
        name, version = fields["Package"].casefold(), fields.get("Version", "")
        versions.setdefault(name, version)
        if fields.get("Architecture"):
            versions[f"{name}:{fields['Architecture'].casefold()}"] = version
    return versions
