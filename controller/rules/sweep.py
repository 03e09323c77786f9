"""The periodic sweep: a thread that asks the rules service to judge what only time passing reveals.

A machine still on after work, an agent silent during working hours, activity going on outside
them: no new fact has to arrive for these to become violations, so every controller runs a
:class:`Sweeper`; :meth:`RulesService.sweep` makes sure only one of them sweeps at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 60.0


class Sweepable(Protocol):
    def sweep(self) -> object: ...


class Sweeper:
    """Runs ``service.sweep()`` at start and then every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, service: Sweepable, interval: float = DEFAULT_INTERVAL_SECONDS) -> None:
        if interval <= 0:
            raise ValueError(f"the sweep interval must be above 0 seconds, got {interval}")
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rules-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop and wait for a sweep in progress to finish (at most ``timeout`` s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self._service.sweep()
                log.debug("sweep done: %s", result)
            except Exception:  # noqa: BLE001 - the database may be down for a while; the next sweep retries
                log.exception("rules sweep failed; retrying in %.0f s", self._interval)
            self._stop.wait(self._interval)
