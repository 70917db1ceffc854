"""When a search must stop: a wall-clock deadline, or a request from outside (Ctrl-C).

A :class:`Stop` is created once per solve and handed down to everything that
can take long: the column search checks :meth:`Stop.expired` between steps,
and a backend registers a cancel hook for the duration of its MIP solve, so a
request stops the solver itself within a fraction of a second.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

TIME_LIMIT = "time limit"
INTERRUPTED = "interrupted"


class SearchStoppedError(Exception):
    """Raised inside a search when its :class:`Stop` fires before an answer exists."""


_ACTIVE: ContextVar[tuple[Stop, float] | None] = ContextVar("active_stop", default=None)
"""The :class:`Stop` that :func:`checkpoint` obeys and its margin (:meth:`Stop.active`)."""


def checkpoint() -> None:
    """Raise :class:`SearchStoppedError` when the :class:`Stop` made active by
    :meth:`Stop.active` has fired; nothing outside such a block.

    For long computations deep in the cost model (the loop-nest tables), which
    have no :class:`Stop` of their own to hand down and are shared by callers
    that cannot stop halfway (scoring a mapping).
    """
    active = _ACTIVE.get()
    if active is None:
        return
    stop, margin_s = active
    stop.check()
    if stop.deadline is not None and time.perf_counter() >= stop.deadline - margin_s:
        raise SearchStoppedError(TIME_LIMIT)


class Stop:
    """A deadline (``time.perf_counter()`` seconds) and an external stop request.

    Parameters
    ----------
    time_limit_s
        Wall-clock seconds from now; ``None`` for no limit.
    """

    def __init__(self, time_limit_s: float | None = None) -> None:
        self.start = time.perf_counter()
        self.deadline = None if time_limit_s is None else self.start + time_limit_s
        self.reason: str | None = None
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def time_limit_s(self) -> float | None:
        """The whole limit in seconds (deadline less start), ``None`` without one."""
        return None if self.deadline is None else self.deadline - self.start

    def remaining_s(self) -> float | None:
        """Seconds left before the deadline (0 once stopped), ``None`` without one."""
        if self.reason is not None:
            return 0.0
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.perf_counter())

    def expired(self) -> bool:
        """Whether the search must stop now (deadline passed or stop requested)."""
        if self.reason is None and self.deadline is not None \
                and time.perf_counter() >= self.deadline:
            self.reason = TIME_LIMIT
        return self.reason is not None

    def check(self) -> None:
        """Raise :class:`SearchStoppedError` when :meth:`expired`."""
        if self.expired():
            raise SearchStoppedError(self.reason)

    def request(self, reason: str = INTERRUPTED) -> None:
        """Ask the search to stop (safe from a signal handler) and cancel any running solve."""
        if self.reason is None:
            self.reason = reason
        with self._lock:
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    def limit_s(self, wanted_s: float | None, floor_s: float = 0.05) -> float | None:
        """``wanted_s`` capped by the time left (at least ``floor_s`` so a backend gets
        a positive limit); ``None`` when neither limits."""
        left = self.remaining_s()
        if left is None:
            return wanted_s
        capped = left if wanted_s is None else min(wanted_s, left)
        return max(floor_s, capped)

    @contextmanager
    def active(self, margin_s: float = 0.0) -> Iterator[None]:
        """Make :func:`checkpoint` obey this stop while the block runs (this thread),
        ``margin_s`` seconds before its deadline (time left for an answer)."""
        token = _ACTIVE.set((self, margin_s))
        try:
            yield
        finally:
            _ACTIVE.reset(token)

    @contextmanager
    def cancel_hook(self, hook: Callable[[], None]) -> Iterator[None]:
        """Register ``hook`` (e.g. a solver's stop method) while the block runs."""
        with self._lock:
            self._hooks.append(hook)
        try:
            if self.reason is not None:
                hook()
            yield
        finally:
            with self._lock:
                self._hooks.remove(hook)


def run_stoppable(work: Callable[[], T], cancel: Callable[[], None], stop: Stop | None) -> T:
    """Run ``work`` (a native solve that releases the GIL) so that a stop request
    cancels it at once.

    The solve runs in a worker thread while this (main) thread waits in short
    joins: Python runs signal handlers only in the main thread, between
    bytecodes, so a solve called directly would hold Ctrl-C until it returns.
    """
    if stop is None or threading.current_thread() is not threading.main_thread():
        if stop is None:
            return work()
        with stop.cancel_hook(cancel):
            return work()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="stems-opt-solve", daemon=True)
    with stop.cancel_hook(cancel):
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.05)
        except BaseException:  # e.g. KeyboardInterrupt in an embedding program
            stop.request()
            worker.join()
            raise
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def parse_time_limit(text: str) -> float | None:
    """A time limit from the command line: positive finite seconds, or ``none``."""
    if text.strip().lower() in ("none", "off", "inf"):
        return None
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number of seconds or 'none', got {text!r}")
    return value
