"""Named schedules scored in a second process while the exact search runs.

Under a time limit, or when the user may stop the search, the best named
schedule is the fallback mapping. Scoring them takes seconds on deep
networks, so a child process scores them on the second core from the start
and sends each result as it is ready; at the end the search takes whatever
arrived and stops the child, so the fallback never delays the answer.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection

from stems_opt.problem import Problem
from stems_opt.result import Result

FALLBACK_SCHEDULES = ("TB-LBL", "TB-F", "ST-F")
"""Named schedules tried as the fallback, cheapest to score first."""


def in_search_space(problem: Problem, result: Result) -> bool:
    """Whether every segment of ``result``'s mapping lies in the search space
    (``problem.max_segment_layers``), so it may stand in for the search's answer."""
    cap = problem.max_segment_layers
    return result.mapping is not None and (cap is None or all(
        len(s.layers) <= cap for s in result.mapping.segments))


def named_in_space(problem: Problem, name: str) -> Result | None:
    """The named schedule ``name`` when it fits and lies in the search space, else ``None``."""
    from stems_opt.heuristics import named_schedule

    cap = problem.max_segment_layers
    if cap is not None and name == "ST-LBL" and len(problem.network.layers) > cap:
        return None
    r = named_schedule(problem, name)
    return r if r.feasible and in_search_space(problem, r) else None


def _child(problem: Problem, names: tuple[str, ...], conn: Connection) -> None:
    from stems_opt.heuristics import named_schedule

    # Ctrl-C reaches the whole process group: only the parent decides what it means;
    # the parent ends this process with SIGTERM, whatever handler it had installed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = os.getppid()
    for name in names:
        if os.getppid() != parent:  # the parent is gone
            return
        try:
            conn.send((name, named_schedule(problem, name)))
        except Exception as exc:  # the parent reports it; the search goes on
            conn.send((name, f"{type(exc).__name__}: {exc}"))
    conn.close()


class BackgroundNamed:
    """Score ``names`` in a child process; collect them with :meth:`poll`.

    Use as a context manager: leaving it stops the child.
    """

    def __init__(self, problem: Problem, names: tuple[str, ...] = FALLBACK_SCHEDULES) -> None:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(problem, names, child_conn),
                                 name="stems-opt-named", daemon=True)
        self._proc.start()
        child_conn.close()
        self.problem = problem
        self.names = names
        self.results: dict[str, Result] = {}
        self.errors: dict[str, str] = {}

    def poll(self) -> dict[str, Result]:
        """Results arrived so far, by schedule name (without waiting)."""
        with contextlib.suppress(EOFError, OSError):
            while self._conn.poll():
                name, item = self._conn.recv()
                if isinstance(item, Result):
                    self.results[name] = item
                else:
                    self.errors[name] = str(item)
        return self.results

    def best(self) -> Result | None:
        """The best named schedule arrived so far that fits and lies in the search space."""
        done = [r for r in self.poll().values() if r.feasible and r.objective_value is not None
                and in_search_space(self.problem, r)]
        return min(done, key=lambda r: r.objective_value, default=None)  # type: ignore

    def done(self) -> bool:
        """Whether every schedule has arrived (or failed)."""
        self.poll()
        return len(self.results) + len(self.errors) == len(self.names)

    def alive(self) -> bool:
        """Whether the child may still send results."""
        if self._conn.closed:
            return False
        return self._proc.is_alive() or self._conn.poll()

    def close(self) -> None:
        """Stop the child at once."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(1.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()

    def __enter__(self) -> BackgroundNamed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
