"""CounterGuard protocol packages, one per version."""
