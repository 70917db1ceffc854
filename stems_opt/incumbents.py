"""Named schedules as the search's floor: scored in its own process first where that
is cheap, else in a second process while the exact search runs.

Under a time limit, or when the user may stop the search, the best named
schedule bounds the answer from above. On small networks the schedules take
a few seconds at most (:func:`named_cost_s`), so they are scored in the
search's own process before the search starts, within a budget, and seed it
(:func:`score_in_process`): the answer is then never worse than any of them.
What the budget leaves (all of them on deep networks, where they take tens
of seconds) a child process scores on the second core meanwhile, sending
each result as it is ready (:class:`BackgroundNamed`); at the end the search
takes whatever arrived and stops the child, so the fallback never delays
the answer. For energy through loop nests under a limit of at most 60 s the
child also runs a short search of the same objective without them and sends
its mapping scored with them (:func:`stems_opt.solvers.coarse_seed`), then a
short traffic search that sends its mapping and the least traffic it proved
(:func:`stems_opt.solvers.traffic_seed`): the segments of every result that
arrives seed the exact search, and the least traffic bounds its energy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection

from stems_opt.problem import Objective, Problem
from stems_opt.processes import stop_process
from stems_opt.result import Result, SolveStatus
from stems_opt.stopping import INTERRUPTED, SearchStoppedError, Stop

FALLBACK_SCHEDULES = ("TB-LBL", "TB-F", "ST-F")
"""Named schedules tried as the fallback."""
SCORING_ORDER = ("TB-LBL", "ST-F", "TB-F")
"""The fallback schedules, cheapest to score first (measured on the bundled networks:
TB-LBL takes a tenth of the others, ST-F is mostly cheaper than TB-F)."""
NAMED_S_PER_ROW = 0.0025
"""Seconds the three fallback schedules take per output row of the network (OY extents
summed over layers), measured on an idle core: SEW-ResNet-18 (1,025 rows) 1.5-2.8 s,
RED-LIF (1,349) 3.1-6.4 s, SEW-ResNet-152 (3,990) 10-14.5 s, a 1000-layer chain
(32,000) 118-150 s. On a loaded machine several times more."""
FUSED_PER_LAYERWISE = 12.0
"""ST-F and TB-F each take about this many times what TB-LBL took (measured: 6-12 on
SEW-ResNet-18, 7-19 on SEW-ResNet-152, 70 on a 1000-layer chain): what is left is
predicted from TB-LBL's own time, so the prediction follows the machine's load."""
IN_PROCESS_SHARE = 0.3
"""The fallback schedules are scored in the search's own process while their (estimated,
then predicted) time fits in this share of the time limit ..."""
IN_PROCESS_MAX_S = 3.0
"""... and in at most this many seconds (SEW-ResNet-18 and its variants, 2.6 s on an idle
core, at limits from 9 s: the seconds a proof then loses are few; RED-LIF, 3.4 s, and
deeper networks, whose search beats the named schedules long before they are scored,
keep the second process, which runs on the other core)."""
IN_PROCESS_UP_TO_S = 30.0
"""Under longer limits (or none: a caller who may stop the search) the second process,
on the other core, delivers long before the limit: the search's own time is left to
it (the command line's default limit is 300 s)."""


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


def named_cost_s(problem: Problem) -> float:
    """Estimated seconds to score the fallback schedules of ``problem`` on one idle core.

    Their tile search fills the schedule once per candidate tile count, and a
    fill costs about one scoring per output row, so the time grows with the
    network's output rows (see :data:`NAMED_S_PER_ROW`).
    """
    from stems_opt.network import Axis

    return NAMED_S_PER_ROW * sum(lay.extent(Axis.OY) for lay in problem.network.layers)


def in_process_budget_s(time_limit_s: float | None) -> float:
    """Seconds the search's own process may spend on the fallback schedules."""
    return IN_PROCESS_MAX_S if time_limit_s is None else \
        min(IN_PROCESS_MAX_S, IN_PROCESS_SHARE * time_limit_s)


def in_process(problem: Problem, time_limit_s: float | None) -> bool:
    """Whether the fallback schedules start in the search's own process, before the
    search (a tight limit they are estimated cheap enough for), rather than in a
    second process."""
    return time_limit_s is not None and time_limit_s <= IN_PROCESS_UP_TO_S and \
        named_cost_s(problem) <= in_process_budget_s(time_limit_s)


def score_in_process(problem: Problem, stop: Stop, budget_s: float,
                     names: tuple[str, ...] = SCORING_ORDER
                     ) -> tuple[list[Result], tuple[str, ...]]:
    """Score ``names`` here, in order, while they fit in ``budget_s`` seconds.

    Returns the results that fit and lie in the search space, and the names
    left for a second process: those after the first whose predicted time
    (:data:`FUSED_PER_LAYERWISE` times the first's) would overrun the budget,
    or that the budget (or ``stop``) interrupted.
    """
    from stems_opt.heuristics import named_schedule

    start = time.perf_counter()
    own = Stop(budget_s)
    own.deadline = own.deadline if stop.deadline is None else min(own.deadline, stop.deadline)
    found: list[Result] = []
    first_s = None
    for k, name in enumerate(names):
        elapsed = time.perf_counter() - start
        if stop.reason is not None or (first_s is not None and
                                       elapsed + FUSED_PER_LAYERWISE * first_s > budget_s):
            return found, names[k:]
        with stop.cancel_hook(lambda: own.request(stop.reason or INTERRUPTED)):
            try:
                r = named_schedule(problem, name, stop=own)
            except SearchStoppedError:
                return found, names[k:]
        first_s = time.perf_counter() - start if first_s is None else first_s
        if r.feasible and in_search_space(problem, r):
            found.append(r)
    return found, ()


def best_of(results: Iterable[Result]) -> Result | None:
    """The result of least objective value among ``results`` (the first on ties)."""
    done = [r for r in results if r.feasible and r.objective_value is not None]
    return min(done, key=lambda r: r.objective_value, default=None)  # type: ignore


COARSE_SEED = "search:no-nests"
"""The name the coarse seed (:func:`stems_opt.solvers.coarse_seed`) arrives under."""
CHILD_NICE = 10
"""How much lower the search's second process sets its scheduling priority after its
first job (:class:`BackgroundNamed` with ``helper``)."""
TRAFFIC_SEED = "search:traffic"
"""The name the traffic seed (:func:`stems_opt.solvers.traffic_seed`) arrives under."""
SEED_SHARE = 0.25
"""The coarse seed searches for this share of the time limit (the traffic seed, after it,
for ``TRAFFIC_SEED_SHARE``) ..."""
SEED_MAX_S = 10.0
"""... and at most this many seconds ..."""
SEED_UP_TO_S = 60.0
"""... under limits up to this many seconds: under longer ones (or none) the search
finds such mappings itself long before the limit, and the seed's process would only
take the second core from its proof (SEW-ResNet-18 energy at 128 KB proven in 23 s
with the seed, 21 s without; RED-LIF 33 s and 37 s). Measured again with the dive of no
limit under long limits (``--time-limit 180``, idle cores, with / without the seed): the
seed's mappings come much earlier (RED-LIF energy at 128 KB 39,413 uJ at 10.9 s / 60,927
at 11.9 s; 512 KB the optimum at 11.8 s / 16.5 s; SEW-ResNet-152 at 1 MB 14,200.6 at
11.9 s / 14,268.0 at 12.8 s), but the proofs are as fast or slower (RED-LIF 128 / 256 /
512 KB 34.5 / 33.7 s, 23.8 / 20.2 s and 20.5 / 25.7 s, 20.3 / 18.1 s; SEW-ResNet-18
128 KB 11.8 / 10.8 s; SEW-ResNet-152 1 MB 64.5 / 59.0 s), and the proof is what a long
limit is for."""


def coarse_seed_s(problem: Problem, time_limit_s: float | None) -> float | None:
    """Seconds the second process spends on :func:`stems_opt.solvers.coarse_seed`
    (``None``: no seed).

    Energy through loop nests only: that search solves nests for every option
    it prices and needs seconds before its first mapping on large maps, while
    the same objective with one access per use below the global buffer solves
    none and finds good mappings in a fraction of a second, which are good
    with nests too where DRAM dominates (RED-LIF with a 3 s seed: 128 KB
    40,049 uJ, 2 MB 24,614 uJ, 4.5 % and 0.1 % above the optima; the energy
    search had 63,603 and 30,393 uJ at 10 s).
    """
    if problem.objective is not Objective.ENERGY or problem.weights is not None \
            or not problem.hardware.loop_nests or time_limit_s is None \
            or time_limit_s > SEED_UP_TO_S:
        return None
    return min(SEED_MAX_S, SEED_SHARE * time_limit_s)


TRAFFIC_SEED_SHARE = 0.5
"""The traffic seed's share of the time limit instead (at most ``SEED_MAX_S``): it runs
bound first (no dive), and what it is for is the least traffic it proves, which bounds
the energy (``ColumnSolver.traffic_floor``). RED-LIF energy at 128 KB under a 10 s limit
(idle cores): with its dive and a quarter of the limit it proved 437.7 Mbit, a floor
below the search's own bound (gap 24-30 %); bound first, 614.6 Mbit with a quarter,
1,230.2 Mbit with 4 s and the optimum, 1,277.7 Mbit, with half, whose floor, 37,278.0 uJ,
is 2.7 % below the optimum (gap 6.0 %, the rest the mapping's)."""


def traffic_seed_s(problem: Problem, time_limit_s: float | None) -> float | None:
    """Seconds the second process spends on :func:`stems_opt.solvers.traffic_seed`, after
    the coarse seed (``None``: no seed; the same cases as :func:`coarse_seed_s`)."""
    if coarse_seed_s(problem, time_limit_s) is None:
        return None
    assert time_limit_s is not None
    return min(SEED_MAX_S, TRAFFIC_SEED_SHARE * time_limit_s)


Seeds = tuple[tuple[str, Callable[[Problem], Result]], ...]
"""Searches the second process runs besides the named schedules: a name and a function
of the problem (module level, so that a spawned process can unpickle it)."""


def _jobs(names: tuple[str, ...], seeds: Seeds) -> list[tuple[str, Callable]]:
    """What the second process runs, in order: the cheapest named schedule, the
    seeds (they beat the named schedules by far where they apply), the rest."""
    from stems_opt.heuristics import named_schedule

    jobs: list[tuple[str, Callable]] = [
        (name, functools.partial(named_schedule, name=name)) for name in names]
    return [*jobs[:1], *seeds, *jobs[1:]]


def _child(problem: Problem, names: tuple[str, ...], seeds: Seeds, conn: Connection,
           helper: bool, parent_end: Connection) -> None:
    """The second process: run the jobs in order and send each result on ``conn``.
    ``parent_end`` is the parent's end of the pipe, inherited at the fork."""
    # Ctrl-C reaches the whole process group: only the parent decides what it means;
    # the parent ends this process with SIGTERM, whatever handler it had installed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Held here, the parent's end would keep the pipe open after a killed parent: a
    # result larger than the pipe's buffer would block this process forever.
    parent_end.close()
    with contextlib.suppress(OSError):  # the parent is gone: end quietly
        _run_jobs(problem, names, seeds, conn, helper)
    conn.close()


def _run_jobs(problem: Problem, names: tuple[str, ...], seeds: Seeds, conn: Connection,
              helper: bool) -> None:
    """:func:`_child`'s jobs, each result sent on ``conn`` as it is found."""
    logging.getLogger("stems_opt.progress").disabled = True  # (the seed: silent)
    parent = os.getppid()
    seeded = {name for name, _ in seeds}
    best = math.inf  # the least value sent so far
    # Step shapes whose optimal nests the parent has: those found before the fork (a
    # process that solved before keeps its table), then those sent.
    sent: set = set(_new_nests(problem, set()))
    for k, (name, job) in enumerate(_jobs(names, seeds)):
        if os.getppid() != parent:  # the parent is gone
            return
        if k == 1 and helper:
            _lower_priority()
        try:
            result = job(problem)
            if name in seeded:
                result = _unless_worse(result, best)
            if result.feasible and result.objective_value is not None:
                best = min(best, result.objective_value)
            message = (name, result, _new_nests(problem, sent))
        except Exception as exc:  # the parent reports it; the search goes on
            message = (name, f"{type(exc).__name__}: {exc}", {})
        conn.send(message)


def _new_nests(problem: Problem, sent: set) -> dict:
    """The optimal nests this process found on ``problem``'s hardware and has not sent
    yet (none without loop nests), scoring the mappings it sends: the parent takes them
    (:meth:`BackgroundNamed.poll`), so scoring such a mapping there finds none of its
    nests again. (Under a 2 s limit on a loaded machine, RED-LIF energy's answer, a
    mapping from here scored from an empty table, overran the limit by a second.)"""
    if not problem.hardware.loop_nests:
        return {}
    from stems_opt.cost.energy import nest_hardware
    from stems_opt.cost.loops import known_nests

    new = {shape: got for shape, got in known_nests(nest_hardware(problem.hardware)).items()
           if shape not in sent}
    sent.update(new)
    return new


def _lower_priority() -> None:
    """Lower this process's priority by :data:`CHILD_NICE`: the search's own threads
    come first when every core is busy (a helper's process, after its first job)."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(CHILD_NICE)


def _unless_worse(result: Result, best: float) -> Result:
    """A seed's ``result``, without its mapping when it is no better than ``best``:
    seeding a mapping costs the search time (its segments scored in their columns,
    intervals opened), which its own mappings need (SEW-ResNet-152 energy at 1 MB under
    a 10 s limit ended at the best named schedule with every seed's mapping seeded)."""
    if not result.feasible or result.objective_value is None or result.objective_value < best:
        return result
    return dataclasses.replace(result, status=SolveStatus.UNKNOWN, mapping=None, cost=None,
                               message=f"no better than {best:.6g}: not sent")


class BackgroundNamed:
    """Score ``names`` in a child process; collect them with :meth:`poll`.
    The child also runs ``seeds`` (after the first name; e.g.
    :func:`stems_opt.solvers.coarse_seed`), whose results arrive under their names.
    A ``helper``'s child (the search's fallback and seeds) runs its first job at
    the caller's priority, since under a short limit it may be the only mapping
    in time (a child niced from its start sent none within a 2 s limit on a loaded
    machine), and the rest :data:`CHILD_NICE` lower, since they only help the
    search; otherwise (schedules a user asked for) every job at the caller's.

    Use as a context manager: leaving it stops the child.
    """

    def __init__(self, problem: Problem, names: tuple[str, ...] = SCORING_ORDER,
                 seeds: Seeds = (), helper: bool = False) -> None:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child,
                                 args=(problem, names, seeds, child_conn, helper,
                                       self._conn),
                                 name="stems-opt-named", daemon=True)
        self._proc.start()
        child_conn.close()
        self.problem = problem
        self.seeds = tuple(name for name, _ in seeds)
        self.names = (*names, *self.seeds)
        self.results: dict[str, Result] = {}
        self.errors: dict[str, str] = {}
        self._ended = False  # the child's end of the pipe is closed and all read

    def poll(self) -> dict[str, Result]:
        """Results arrived so far, by schedule name (without waiting)."""
        try:
            while self._conn.poll():
                name, item, nests = self._conn.recv()
                if nests:  # (the child's nests: exact, from the same code)
                    from stems_opt.cost.energy import nest_hardware
                    from stems_opt.cost.loops import add_nests

                    add_nests(nest_hardware(self.problem.hardware), nests)
                if isinstance(item, Result):
                    self.results[name] = item
                else:
                    self.errors[name] = str(item)
        except (EOFError, OSError):  # the child exited (or was killed) and all is read
            self._ended = True
        return self.results

    def best(self) -> Result | None:
        """The best named schedule arrived so far that fits and lies in the search space."""
        return best_of(r for r in self.poll().values() if in_search_space(self.problem, r))

    def done(self) -> bool:
        """Whether every schedule has arrived (or failed)."""
        self.poll()
        return len(self.results) + len(self.errors) == len(self.names)

    def alive(self) -> bool:
        """Whether the child may still send results: false once its pipe is read to the
        end (a pipe whose writer has closed polls as readable: only reading tells)."""
        if self._conn.closed:
            return False
        self.poll()
        return not self._ended

    def running(self) -> bool:
        """Whether the child still runs (and uses a core): results it sent may still
        wait in the pipe."""
        return self._proc.is_alive()

    def close(self) -> None:
        """Stop the child at once."""
        stop_process(self._proc, self._conn)

    def __enter__(self) -> BackgroundNamed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
