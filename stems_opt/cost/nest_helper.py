"""A second process that solves loop nests beside the search.

Energy through loop nests spends seconds solving step shapes
(:func:`stems_opt.cost.loops.solve_nests`): RED-LIF's partition floors and
block floors take 15 s of a 54 s proof, in calls of tens of independent
batches. The search's second process (the named schedules and, under short
limits, seeds: :class:`stems_opt.incumbents.BackgroundNamed`) exits long before
such a proof ends, and without a time limit there is none: the second core
idles. :class:`NestHelper` is a process forked at the start of a solve that
takes batches of such a call from a shared counter while the search's
process takes the others: each batch is solved by one of the two, whole,
by the same code, so the table is the same as solved alone (a shape's optimum
does not depend on the other shapes of its batch).

Use :func:`helping`: inside it, ``solve_nests`` hands a call of two batches or
more to the helper whenever ``ready()`` says the core is free.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

from stems_opt.cost import loops
from stems_opt.processes import stop_process

Batch = Sequence["loops.StepShape"]
Record = Callable[[int, list], None]
"""Called with a batch's index and what :func:`~stems_opt.cost.loops.solve_batch` gave
for it."""


def _serve(conn: Connection, counter: Any, search_end: Connection) -> None:
    """The helper's loop: for each call, solve the batches it takes from ``counter``
    (the search's process takes the others) and send back what it solved.
    ``search_end`` is the search's end of the pipe, inherited at the fork."""
    # Ctrl-C reaches the whole process group: only the search decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Held here, the search's end would keep the pipe open after the search is gone
    # (a second Ctrl-C, a kill): this process would wait for a call forever.
    search_end.close()
    while True:
        try:
            batches, hw, nests = conn.recv()
        except (EOFError, OSError):  # the search is gone
            return
        done: dict[int, list] = {}
        while (i := _take(counter, len(batches))) is not None:
            done[i] = loops.solve_batch(batches[i], hw, nests)
        try:
            conn.send(done)
        except OSError:  # the search ended meanwhile (a second Ctrl-C): end quietly
            return


def _take(counter: Any, n: int) -> int | None:
    """The next batch index of ``n`` from the shared ``counter``; ``None`` when all
    are taken."""
    with counter.get_lock():
        i = counter.value
        if i >= n:
            return None
        counter.value = i + 1
    return i


class NestHelper:
    """A forked process solving batches of loop nests with the search's process
    (:meth:`solve`). Fork it before the search starts threads (the solvers') and
    while the process is small: it shares the pages it does not write."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        ctx = multiprocessing.get_context("fork")
        self._counter = ctx.Value("q", 0)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self._counter, self._conn),
                                 name="stems-opt-nests", daemon=True)
        self._proc.start()
        child.close()
        self.ready = ready
        self.batches_helped = 0
        """How many batches the helper solved (for the stats and the tests)."""

    def usable(self, batches: int) -> bool:
        """Whether a call of ``batches`` batches should be shared now."""
        return batches >= 2 and self._proc.is_alive() and self.ready()

    def solve(self, batches: Sequence[Batch], hw: loops.NestHardware, nests: bool,
              record: Record) -> None:
        """Solve the batches of ``batches`` once each, here or in the helper, calling
        ``record`` for each as it is in hand. When the search is stopped
        (:func:`~stems_opt.stopping.checkpoint` raises), the batches solved by
        then are still recorded; a helper that died leaves its batches unrecorded
        (:func:`~stems_opt.cost.loops.solve_nests` solves them)."""
        with self._counter.get_lock():
            self._counter.value = 0
        try:
            self._conn.send((list(batches), hw, nests))
        except (OSError, ValueError):  # the helper is gone: the caller solves them all
            self.close()
            return
        try:
            while (i := _take(self._counter, len(batches))) is not None:
                loops.checkpoint()
                record(i, loops.solve_batch(batches[i], hw, nests))
        finally:
            with self._counter.get_lock():  # (stopped: the helper ends its batch and stops)
                self._counter.value = len(batches)
            self._collect(record)

    def _collect(self, record: Record) -> None:
        """Wait for the helper's batches of the call (it ends the one in hand) and
        record them."""
        try:
            done = self._conn.recv()
        except (EOFError, OSError):  # the helper died mid-call: nothing of it is kept
            self.close()
            return
        self.batches_helped += len(done)
        for i, got in done.items():
            record(i, got)

    def close(self) -> None:
        """Stop the helper at once."""
        stop_process(self._proc, self._conn)


def wanted(threads: int | None) -> bool:
    """Whether a solve with ``threads`` may use a helper: on two cores or more, unless
    asked for one thread (``None``, the default, is one solver thread, but the search
    uses a second process anyway: :class:`~stems_opt.incumbents.BackgroundNamed`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return cores >= 2 and (threads is None or threads >= 2) \
        and "fork" in multiprocessing.get_all_start_methods()


@contextlib.contextmanager
def helping(ready: Callable[[], bool]) -> Iterator[NestHelper]:
    """Solve loop nests with a :class:`NestHelper` inside this block whenever
    ``ready()``; the helper stops at its end."""
    helper = NestHelper(ready)
    previous = loops.set_helper(helper)
    try:
        yield helper
    finally:
        loops.set_helper(previous)
        helper.close()
