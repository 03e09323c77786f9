"""CounterGuard agent: observes facts on a workstation and reports them to the controller."""

__version__ = "0.1.0"
