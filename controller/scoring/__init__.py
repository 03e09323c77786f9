"""The monthly score sheet (regulation 9) and the money-and-escalation scheme (regulation 12)."""
