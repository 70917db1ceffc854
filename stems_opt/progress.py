"""Progress of a search, reported through :mod:`logging` (never on stdout).

Lines go to the ``stems_opt.progress`` logger at INFO level whenever the
incumbent or the bound improves, and at least every ``every_s`` seconds from a
heartbeat thread, so a long local solve does not leave the user in silence.
The command line shows them on stderr unless ``--quiet``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

LOG = logging.getLogger("stems_opt.progress")


def _identity(value: float) -> float:
    return value


class Progress:
    """The state a search reports: incumbent, bound, columns priced.

    Parameters
    ----------
    objective
        ``traffic`` (values in bits) or ``energy`` (values in pJ).
    to_user
        Converts the search's own units into bits or pJ.
    every_s
        Longest silence between two lines.
    """

    def __init__(self, objective: str, to_user: Callable[[float], float] = _identity,
                 every_s: float = 5.0) -> None:
        self.objective = objective
        self.to_user = to_user
        self.every_s = every_s
        self.start = time.perf_counter()
        self.incumbent: float | None = None  # user units
        self.incumbent_source = ""
        self.bound: float | None = None
        self.columns_priced = 0
        self._last_log = self.start
        self._last_due = self.start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sources: list[Callable[[], tuple[float, str] | None]] = []

    def add_source(self, source: Callable[[], tuple[float, str] | None]) -> None:
        """Another supplier of incumbents (value in user units, and its name), asked
        at every :meth:`update` from the searching thread."""
        self._sources.append(source)

    def due(self, period_s: float = 1.0) -> bool:
        """Whether ``period_s`` passed since the last call that returned ``True``:
        lets a search look for its incumbent about once a second."""
        now = time.perf_counter()
        if now - self._last_due >= period_s:
            self._last_due = now
            return True
        return False

    def update(self, *, bound: float | None = None, incumbent: float | None = None,
               columns_priced: int | None = None, source: str = "") -> None:
        """Record new values (search units); log a line when one improved."""
        improved = False
        for ask in self._sources:
            found = ask()
            if found is not None and (self.incumbent is None
                                      or found[0] < self.incumbent * (1 - 1e-12)):
                self.incumbent, self.incumbent_source = found
                improved = True
        if bound is not None and math.isfinite(bound):
            user = self.to_user(bound)
            if self.bound is None or user > self.bound * (1 + 1e-12):
                self.bound, improved = user, True
        if incumbent is not None and math.isfinite(incumbent):
            user = self.to_user(incumbent)
            if self.incumbent is None or user < self.incumbent * (1 - 1e-12):
                self.incumbent, self.incumbent_source, improved = user, source, True
        if columns_priced is not None:
            self.columns_priced = columns_priced
        if improved or time.perf_counter() - self._last_log >= self.every_s:
            self.log()

    def line(self) -> str:
        """The current state as one line."""
        unit, div = {"energy": ("µJ", 1e6), "latency": ("Mcycles", 1e6),
                     "edp": ("M (a fJ + b cycles)", 1e6)}.get(
            self.objective, ("Mbit", 1e6))
        parts = [f"{time.perf_counter() - self.start:7.1f} s"]
        inc = self.incumbent
        parts.append("incumbent " + ("-" if inc is None else f"{inc / div:,.3f} {unit}"
                                     + (f" ({self.incumbent_source})"
                                        if self.incumbent_source else "")))
        parts.append("bound " + ("-" if self.bound is None
                                 else f"{self.bound / div:,.3f} {unit}"))
        if inc is not None and self.bound is not None and inc > 0:
            parts.append(f"gap {max(0.0, (inc - self.bound) / inc):.2%}")
        parts.append(f"columns priced {self.columns_priced}")
        return "  ".join(parts)

    def log(self) -> None:
        """Log the current state now."""
        self._last_log = time.perf_counter()
        LOG.info("%s", self.line())

    def __enter__(self) -> Progress:
        if LOG.isEnabledFor(logging.INFO):
            self._thread = threading.Thread(target=self._beat, name="stems-opt-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(0.25):
            if time.perf_counter() - self._last_log >= self.every_s:
                self.log()
