"""A second process that tightens columns beside the search.

On a deep network with a small buffer the search's bound is what stays open
under a short limit: SEW-ResNet-152's energy at 128 KB has its best mapping
within 0.5 % of the optimum at 4 s of a 10 s limit, while the master's bound,
raised a round of tied columns at a time, is 12 % below it at 10 s. Every
column tightened (``BoundsMixin.tighten``: its frames bounded with what the
buffer forces) gives a bound 2.9 % below the optimum, and the 7,659 columns
whose least path lies below 0.95 of that mapping take about 10 s of one core.

:class:`ColumnHelper` is a process forked at the start of such a solve. It
builds the same columns (the intervals the search opens), and tightens the
columns of its share (:func:`helper_takes`: intervals of most lengths, so that
translated intervals, which share their bounds, stay on one side) least path
first (``MasterMixin.master_through``), sending each column's new bound as it
goes (``column_helped.py`` is the search's side). The search raises its own
columns to them (a bound of the same column, computed by the same code, is valid
there too) and tightens the other share itself, in the same order. The bounds do
not depend on which process computed them, so a proven optimum is the one proven
alone; only how soon the bound rises does.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from stems_opt.processes import stop_process

if TYPE_CHECKING:
    from stems_opt.formulation.column_base import Backend, Column
    from stems_opt.formulation.column_helped import Raised
    from stems_opt.problem import Problem

def helper_takes(col: Column) -> bool:
    """Whether ``col`` is the helper's to tighten: intervals of 2, 3, 4, 6, 7, 8, ...
    layers (all lengths but 1 modulo 4). Translated intervals have equal lengths, so a
    shape's bounds are computed on one side only; the search's share (about a fifth of
    the work below 0.95 of SEW-ResNet-152's best mapping at 128 KB) is what it gets
    through beside its own work, its mappings. (Shapes claimed by whichever process
    asks first, in shared memory, gave 20,141-20,831 uJ at 10 s in three runs against
    20,848-21,220 in five so; the helper alone 20,370-20,599.)"""
    return (col.last - col.first + 1) % 4 != 1


def _serve(problem: Problem, backend: Backend, conn: Connection,
           search_end: Connection) -> None:
    """The helper: build the columns, then tighten its share least path first
    (``HelpedMixin.tighten_share``), sending what rose after each batch, until none is
    left (or the search is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # (only the search decides what it means)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    search_end.close()  # (held here, a search that is gone would leave the pipe open)
    from stems_opt.formulation.backend import SolveOptions
    from stems_opt.formulation.columns import ColumnSolver

    cs = ColumnSolver(problem, backend, SolveOptions(threads=1))
    # (SEW-ResNet-152 at 384 KB, 32,000 columns in: 625 MB against 916 MB keeping them)
    cs.keep_frame_bounds = False
    cs.column_source = _reader(conn)  # (the search's own bounds, likewise)
    try:
        cs.tighten_share(conn.send, helper_takes)
    except OSError:  # the search is gone
        return
    conn.close()


def _reader(conn: Connection) -> Callable[[], list[Raised]]:
    """A thread reading what the search sends on ``conn`` as it comes, and the call
    that takes what it read so far. (Read only between batches, a search sending while
    this process waits to send could fill both directions of the pipe.)"""
    inbox: queue.SimpleQueue[list[Raised]] = queue.SimpleQueue()

    def read() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                inbox.put(conn.recv())

    threading.Thread(target=read, daemon=True).start()

    def take() -> list[Raised]:
        got: list[Raised] = []
        with contextlib.suppress(queue.Empty):
            while True:
                got.extend(inbox.get_nowait())
        return got

    return take


class ColumnHelper:
    """A forked process tightening the columns :func:`helper_takes` for the search
    (:meth:`poll` gives what it sent). Fork it before the search starts threads."""

    def __init__(self, problem: Problem, backend: Backend) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve,
                                 args=(problem, backend, child, self._conn),
                                 name="stems-opt-columns", daemon=True)
        self._proc.start()
        child.close()

    def poll(self) -> list[Raised]:
        """The column bounds sent since the last poll (without waiting)."""
        got: list[Raised] = []
        if self._conn.closed:
            return got
        try:
            while self._conn.poll():
                got.extend(self._conn.recv())
        except (EOFError, OSError):  # the helper is done (or was killed): all is read
            self._conn.close()
        return got

    def send(self, raised: list[Raised]) -> None:
        """Tell the helper the columns this process tightened (its master passes see
        them, so it tightens its own share in the order the whole chain needs)."""
        if raised and not self._conn.closed:
            with contextlib.suppress(OSError):
                self._conn.send(raised)

    def running(self) -> bool:
        """Whether the helper still runs (and uses a core): it ends once its share is
        tightened."""
        return self._proc.is_alive()

    def close(self) -> None:
        """Stop the helper at once."""
        stop_process(self._proc, self._conn)


@contextlib.contextmanager
def helping(problem: Problem, backend: Backend) -> Iterator[ColumnHelper]:
    """A :class:`ColumnHelper` for ``problem`` inside this block."""
    helper = ColumnHelper(problem, backend)
    try:
        yield helper
    finally:
        helper.close()
