"""CounterGuard controller: gRPC ingest, storage, rules, scoring and the admin CLI."""

__version__ = "0.1.0"
