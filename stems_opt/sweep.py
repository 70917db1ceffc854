"""Sweeps: a grid of instances solved point by point, one CSV row per point.

A sweep file (YAML) names the grid::

    networks: [../models/networks/sew_resnet18.yaml, ../models/networks/red_lif.yaml]
    hardware: ../models/hardware/edge_1mb.yaml          # the base accelerator
    global_buffer_sizes: [128KB, 256KB, 512KB, 1MB, 2MB]  # replaces its GB size
    objectives: [traffic, energy]
    state_persistence: [streaming]                     # optional: overrides the networks'
    time_limit: 60                                     # optional: seconds per point

``hardware`` may instead be a list of hardware files (then without
``global_buffer_sizes``). Each point is solved to a proof (or to the time
limit, with its bound and gap) and the named schedules are scored beside it.
A row is appended to the CSV, and flushed, as each point finishes, so an
interrupted sweep loses nothing; ``resume`` skips the points already in the
CSV. When the sweep completes, the CSV is rewritten in grid order, so the
file does not depend on which worker finished first.

Points run on a :class:`concurrent.futures.Executor`: local worker processes
by default, or a Dask cluster's executor (``dask.distributed``, optional):
the same :func:`solve_point` either way.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from stems_opt.errors import Issue, StemsInputError

SWEEP_FIELDS = {"name", "comment", "networks", "hardware", "global_buffer_sizes", "objectives",
                "state_persistence", "time_limit", "solver"}
NAMED_COLUMNS = ("ST-LBL", "TB-LBL", "TB-F", "ST-F")
KEY_COLUMNS = ("network", "network_file", "hardware", "hardware_file", "gb_capacity_bits",
               "objective", "state_persistence")
COLUMNS = (*KEY_COLUMNS, "status", "value", "bound", "gap", "traffic_bits", "energy_pj",
           "compulsory_traffic_bits", "state_bits", "best_named", "best_named_value",
           *NAMED_COLUMNS, "solve_s")
"""CSV columns. Values are exact (bits as integers, pJ as Python's shortest float
repr); an empty named-schedule cell means that schedule does not fit.
``solve_s`` is the only column that varies from run to run."""

_UNITS_BITS = {"b": 1, "bit": 1, "bits": 1, "kbit": 1024, "mbit": 1024 ** 2, "B": 8,
               "KB": 8 * 1024, "KiB": 8 * 1024, "MB": 8 * 1024 ** 2, "MiB": 8 * 1024 ** 2}


@dataclass(frozen=True)
class SweepPoint:
    """One instance of the grid: what a worker needs to solve it (picklable).

    ``gb_capacity_bits`` is ``None`` to keep the hardware file's size;
    ``state_persistence`` is ``None`` to keep the network's.
    """

    network_file: str
    hardware_file: str
    objective: str
    gb_capacity_bits: int | None = None
    state_persistence: str | None = None
    time_limit_s: float | None = None
    solver: str = "cpsat"
    threads: int = 1
    nest_cache: str | None = None  # the nest table's directory (nest_store): none kept


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: its points in grid order and each point's CSV key."""

    file: str
    name: str
    points: tuple[SweepPoint, ...]
    keys: tuple[tuple[str, ...], ...]


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def parse_size_bits(value: object) -> int | None:
    """A global-buffer size in bits: an integer (bits, as the hardware ``size``) or a
    string with a unit (``128KB``, ``1 MB``, ``4096 bits``; 1 KB = 8192 bits).
    ``None`` if it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 1 else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", value)
    if not m:
        return None
    unit = m.group(2)
    factor = _UNITS_BITS.get(unit) or _UNITS_BITS.get(unit.lower()) or \
        _UNITS_BITS.get(unit.upper())
    if factor is None:
        return None
    bits = float(m.group(1)) * factor
    return int(bits) if bits >= 1 and bits == int(bits) else None


def size_label(bits: int) -> str:
    """``128 KB``-style label of a size in bits."""
    if bits % (8 * 1024 ** 2) == 0:
        return f"{bits // (8 * 1024 ** 2)} MB"
    if bits % (8 * 1024) == 0:
        return f"{bits // (8 * 1024)} KB"
    return f"{bits} bits"


def _str_list(d: dict[str, Any], key: str, issues: list[Issue], required: bool) -> list[Any]:
    v = d.get(key)
    if v is None:
        if required:
            issues.append(Issue("is required", field=key))
        return []
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return [v]
    if not isinstance(v, list) or not v:
        issues.append(Issue("must be a value or a non-empty list", field=key))
        return []
    return v


def _files(d: dict[str, Any], key: str, base: Path, loader: Callable[[Path], Any],
           issues: list[Issue]) -> list[tuple[str, str, Any]]:
    """Load each file named under ``key`` (relative to the sweep file), all problems kept:
    ``(path as written, path to open, loaded object)``."""
    out = []
    for i, v in enumerate(_str_list(d, key, issues, required=True)):
        where = f"{key}[{i}]" if isinstance(d.get(key), list) else key
        if not isinstance(v, str):
            issues.append(Issue(f"must be a file path, got {v!r}", field=where))
            continue
        target = base / v
        if not target.is_file():
            issues.append(Issue(f"file not found: {target}", field=where))
            continue
        try:
            out.append((v, str(target), loader(target)))
        except StemsInputError as exc:
            issues += exc.issues
    return out


def load_sweep(path: str | Path, threads: int = 1) -> Sweep:
    """Read and check a sweep file; every network and hardware file it names is loaded
    once here so that all their problems are reported together, before any solving.

    Raises
    ------
    StemsInputError
        With every problem, each naming the file and field.
    """
    from stems_opt.io import _expect_mapping, _unknown, load_hardware, load_network, read_document
    from stems_opt.network import StatePersistence
    from stems_opt.problem import Objective

    path = Path(path)
    file = str(path)
    d = _expect_mapping(read_document(path), "sweep", file)
    issues = _unknown(d, SWEEP_FIELDS, None)
    base = path.parent
    networks = _files(d, "networks", base, load_network, issues)
    hardware = _files(d, "hardware", base, load_hardware, issues)
    sizes: list[int | None] = [None]
    if "global_buffer_sizes" in d:
        sizes = []
        for i, v in enumerate(_str_list(d, "global_buffer_sizes", issues, required=True)):
            bits = parse_size_bits(v)
            if bits is None:
                issues.append(Issue(f"must be a positive size such as 131072 (bits), '128KB' "
                                    f"or '1MB', got {v!r}", field=f"global_buffer_sizes[{i}]"))
            sizes.append(bits)
        if isinstance(d.get("hardware"), list) and len(d["hardware"]) != 1:
            issues.append(Issue("global_buffer_sizes needs one base hardware file, got "
                                f"{len(d['hardware'])}", field="hardware"))
    objectives = [str(o) for o in _str_list(d, "objectives", issues, False)] or ["traffic"]
    for i, o in enumerate(objectives):
        if o not in {x.value for x in Objective}:
            issues.append(Issue(f"unknown objective {o!r} (traffic, energy, latency, edp)",
                                field=f"objectives[{i}]"))
    persistences: list[str | None] = [str(s) for s in
                                      _str_list(d, "state_persistence", issues, False)] or [None]
    for i, s in enumerate(persistences):
        if s is not None and s not in {x.value for x in StatePersistence}:
            issues.append(Issue(f"unknown value {s!r} (streaming, reset)",
                                field=f"state_persistence[{i}]"))
    time_limit = d.get("time_limit")
    if time_limit is not None and (not isinstance(time_limit, (int, float))
                                   or isinstance(time_limit, bool) or not time_limit > 0
                                   or not math.isfinite(time_limit)):
        issues.append(Issue(f"must be a positive number of seconds, got {time_limit!r}",
                            field="time_limit"))
    solver = d.get("solver", "cpsat")
    if solver not in ("cpsat", "highs"):
        issues.append(Issue(f"unknown solver {solver!r} (cpsat, highs)", field="solver"))
    if issues:
        raise StemsInputError([i.with_file(file) for i in issues])
    points, keys = [], []
    for net_name, net_file, net in networks:
        for hw_name, hw_file, hw in hardware:
            for bits in sizes:
                for obj in objectives:
                    for sp in persistences:
                        points.append(SweepPoint(net_file, hw_file, obj, bits, sp,
                                                 None if time_limit is None else float(time_limit),
                                                 solver, threads))
                        keys.append((net.name, net_name, hw.name, hw_name,
                                     str(bits or hw.gb_capacity_bits), obj,
                                     sp or net.state_persistence.value))
    return Sweep(file, str(d.get("name", path.stem)), tuple(points), tuple(keys))


# ---------------------------------------------------------------------------
# Solving one point
# ---------------------------------------------------------------------------

def point_problem(point: SweepPoint) -> Any:
    """The :class:`~stems_opt.problem.Problem` of ``point``."""
    from stems_opt.formulation.frame_store import shared_network
    from stems_opt.io import load_hardware, load_network
    from stems_opt.network import StatePersistence
    from stems_opt.problem import Objective, Problem

    net = load_network(point.network_file)
    if point.state_persistence is not None:
        net = replace(net, state_persistence=StatePersistence(point.state_persistence))
    # One object per distinct network: the points solved in this process share its
    # frames and geometry (formulation/frame_store.py).
    net = shared_network(net)
    hw = load_hardware(point.hardware_file)
    if point.gb_capacity_bits is not None:
        hw = replace(hw, global_buffer=replace(hw.global_buffer,
                                               capacity_bits=point.gb_capacity_bits))
    return Problem(net, hw, Objective(point.objective),
                   name=f"{net.name}@{size_label(hw.gb_capacity_bits)}")


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def with_named_fallback(problem: Any, result: Any, named: Iterable[Any]) -> Any:
    """``result``, or the best of the ``named`` results in the search space when the
    solve stopped unproven with a worse mapping (or none): the answer the solver's own
    fallback gives when the named schedules are scored before its time limit. The
    bound stays the solve's (capped by the value, so the gap is never negative)."""
    from stems_opt.incumbents import in_search_space
    from stems_opt.result import SolveStatus, relative_gap

    if result.status is SolveStatus.OPTIMAL:
        return result
    fits = [r for r in named if r.feasible and in_search_space(problem, r)]
    best = min(fits, key=lambda r: r.objective_value, default=None)
    if best is None or (result.objective_value is not None
                        and result.objective_value <= best.objective_value):
        return result
    value = best.objective_value
    bound = None if result.bound is None else min(result.bound, value)
    gap = relative_gap(value, bound)
    name = best.solver.removeprefix("named:")
    note = f"the named schedule {name} is better than the mapping found"
    return replace(result, status=SolveStatus.OPTIMAL if gap == 0.0 else SolveStatus.FEASIBLE,
                   mapping=best.mapping, cost=best.cost, objective_value=value, bound=bound,
                   gap=gap, message=f"{result.message}; {note}" if result.message else note)


def may_start_processes() -> bool:
    """Whether this process may start child processes: a daemonic one (a Dask worker
    by default, a ``multiprocessing`` daemon) may not."""
    import multiprocessing

    return not multiprocessing.current_process().daemon


def solve_point(point: SweepPoint) -> dict[str, str]:
    """Solve one point and score the named schedules: its CSV row (without the key).

    The named schedules are scored in a second process while the solver runs (they
    also seed its search), as ``compare`` does; any the time limit cut off, and all
    of them in a daemonic worker, which may not start that process, are scored here
    after the solve. ``solve_s`` is the solve's own wall time. With ``nest_cache``
    the point starts from the nests kept there and adds its own.
    """
    from stems_opt.cost import nest_store

    problem = point_problem(point)
    directory = None if point.nest_cache is None else Path(point.nest_cache)
    with nest_store.kept(directory, nest_store.hardware_of(problem.hardware)):
        return _solved_row(problem, point)


def _solved_row(problem: Any, point: SweepPoint) -> dict[str, str]:
    """:func:`solve_point`'s row of ``problem``."""
    from stems_opt import compulsory_traffic_bits, named_schedule
    from stems_opt.result import Result
    from stems_opt.solvers import solve, solve_and_score

    scored: dict[str, object] = {}
    if may_start_processes():
        result, scored = solve_and_score(problem, NAMED_COLUMNS, solver=point.solver,
                                         time_limit_s=point.time_limit_s,
                                         threads=point.threads)
    else:
        result = solve(problem, solver=point.solver, time_limit_s=point.time_limit_s,
                       threads=point.threads, warm_start=False)
    named = {}
    for name in NAMED_COLUMNS:
        r = scored.get(name)
        # Cut off by the limit, or never started (an error here raises again).
        named[name] = r if isinstance(r, Result) else named_schedule(problem, name)
    result = with_named_fallback(problem, result, named.values())
    row = {"status": result.status.value, "value": _num(result.objective_value),
           "bound": _num(result.bound), "gap": _num(result.gap),
           "traffic_bits": _num(result.cost.traffic_bits) if result.cost else "",
           "energy_pj": _num(result.cost.total_energy_pj) if result.cost else "",
           "compulsory_traffic_bits": str(compulsory_traffic_bits(problem.network)),
           "state_bits": str(problem.network.state_size_bits)}
    best: tuple[float, str] | None = None
    for name, r in named.items():
        row[name] = _num(r.objective_value) if r.feasible else ""
        if r.feasible and (best is None or r.objective_value < best[0]):
            best = (r.objective_value, name)
    row["best_named"] = best[1] if best else ""
    row["best_named_value"] = _num(best[0]) if best else ""
    row["solve_s"] = f"{result.runtime_s:.3f}"
    return row


# ---------------------------------------------------------------------------
# Running a sweep
# ---------------------------------------------------------------------------

def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read_done(out: Path) -> list[dict[str, str]]:
    """Complete rows of an earlier run of the sweep (a torn last line is dropped).

    Raises
    ------
    StemsInputError
        If ``out`` is not a CSV this module wrote.
    """
    text = out.read_text(encoding="utf-8")
    if not text.endswith("\n"):  # the last line was cut off mid-write
        text = text[:text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise StemsInputError(Issue("is not a sweep CSV with the expected columns; it is left "
                                    "as it is (choose another --out)", file=str(out),
                                    field="out"))
    return [r for r in reader if None not in r.values() and None not in r]


def _csv_text(rows: Iterable[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[c] for c in KEY_COLUMNS)


def _progress(done: int, total: int, key: Sequence[str], row: dict[str, str],
              stream: TextIO) -> None:
    width = 24
    filled = width * done // max(total, 1)
    bar = "#" * filled + "." * (width - filled)
    status = row["status"]
    if status == "feasible" and row["gap"]:
        status += f" (gap {100 * float(row['gap']):.2f}%)"
    stream.write(f"[{bar}] {done}/{total} {key[0]} @ {size_label(int(key[4]))} {key[5]}: "
                 f"{status} in {row['solve_s']} s\n")
    stream.flush()


def run_sweep(sweep: Sweep, out: str | Path, executor: Executor | None = None,
              resume: bool = False, stream: TextIO | None = None) -> list[dict[str, str]]:
    """Solve every point of ``sweep`` not yet in ``out``, appending one row per point.

    Parameters
    ----------
    executor
        Where points run; ``None`` runs them one by one in this process.
    resume
        Keep the rows already in ``out`` and solve only the missing points
        (rows of points not in this grid are kept, after the grid's). Without
        it an existing ``out`` is an error (it is never overwritten).

    Returns
    -------
    The rows of every point, in grid order (also written to ``out``).
    """
    from stems_opt.io import check_writable, write_text_safely

    out = Path(out)
    stream = stream or sys.stderr
    check_writable(out, field="out")
    done: dict[tuple[str, ...], dict[str, str]] = {}
    others: list[dict[str, str]] = []  # rows of points no longer in the grid: kept, at the end
    if out.exists():
        if not resume:
            raise StemsInputError(Issue("exists; pass --resume to continue that sweep, or "
                                        "choose another --out", file=str(out), field="out"))
        wanted = set(sweep.keys)
        for r in read_done(out):
            if _key(r) in wanted:
                done[_key(r)] = r
            else:
                others.append(r)
    write_text_safely(out, _csv_text([*done.values(), *others]))
    todo = largest_buffer_first([(p, k) for p, k in zip(sweep.points, sweep.keys, strict=True)
                                 if k not in done])
    total = len(sweep.points)
    stream.write(f"sweep {sweep.name}: {total} points, {len(done)} done, {len(todo)} to solve\n")
    with out.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")

        def record(key: tuple[str, ...], row: dict[str, str]) -> None:
            full = dict(zip(KEY_COLUMNS, key, strict=True)) | row
            writer.writerow(full)
            fh.flush()
            os.fsync(fh.fileno())
            done[key] = full
            _progress(len(done), total, key, row, stream)

        if executor is None:
            for point, key in todo:
                record(key, solve_point(point))
        else:
            futures: dict[Future[dict[str, str]], tuple[str, ...]] = {
                executor.submit(solve_point, p): k for p, k in todo}
            try:
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())
            finally:
                for fut in futures:
                    fut.cancel()
    rows = [done[k] for k in sweep.keys]
    write_text_safely(out, _csv_text([*rows, *others]))
    return rows


def largest_buffer_first(todo: list[tuple[SweepPoint, tuple[str, ...]]]
                         ) -> list[tuple[SweepPoint, tuple[str, ...]]]:
    """``todo`` with the buffer sizes of each network, hardware and objective in
    decreasing order (groups in their first point's order): a process then builds
    each frame once, for the largest buffer, and cuts it down for the smaller ones
    (``formulation/frame_store.py``)."""
    first: dict[SweepPoint, int] = {}
    for i, (p, _) in enumerate(todo):
        first.setdefault(replace(p, gb_capacity_bits=None), i)
    return sorted(todo, key=lambda pk: (first[replace(pk[0], gb_capacity_bits=None)],
                                        -(pk[0].gb_capacity_bits or 0)))


def local_executor(workers: int) -> Executor:
    """``workers`` fresh Python processes (spawned, not forked: solver threads and
    forks do not mix)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers,
                               mp_context=multiprocessing.get_context("spawn"))


def dask_client(address: str, workers: int) -> Any:
    """A ``dask.distributed`` client: ``local`` starts a LocalCluster of ``workers``
    single-threaded worker processes; anything else is a scheduler address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise StemsInputError(Issue("needs dask.distributed: pip install 'stems-opt[dask]'",
                                    field="dask")) from None
    if address == "local":
        import dask

        # Non-daemonic workers may start the process that scores the named schedules
        # beside each solve (see solve_point).
        dask.config.set({"distributed.worker.daemon": False})
        return Client(LocalCluster(n_workers=workers, threads_per_worker=1,
                                   dashboard_address=None))
    return Client(address)
