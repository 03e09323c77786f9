"""The policies shipped with CounterGuard: the default (what ``serve`` applies on a fresh database)
and examples of other schemes. Each is a self-contained YAML file; see ``default.yaml``."""

from __future__ import annotations

from pathlib import Path

DEFAULT_POLICY = Path(__file__).with_name("default.yaml")
EXAMPLES = Path(__file__).with_name("examples")


def shipped_policies() -> list[Path]:
    """Every policy file shipped: the default, then the examples by name."""
    return [DEFAULT_POLICY, *sorted(EXAMPLES.glob("*.yaml"))]
