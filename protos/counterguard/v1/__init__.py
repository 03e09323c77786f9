"""Version 1 of the agent ↔ controller contract (generated modules live beside the ``.proto`` files)."""
