"""Solve-time benchmark: every instance x backend x objective, one subprocess per run.

Each run calls :func:`stems_opt.solvers.solve` in a fresh ``spawn`` subprocess
(its own one-worker :class:`~concurrent.futures.ProcessPoolExecutor`), so a
crash or a memory blow-up in one run does not take the others down. A run
that outlives its hard wall-clock limit (``--time-limit`` + 300 s) is killed
and recorded with status ``timeout``; a worker that dies is ``crashed``; a
run that raises is ``error``.

Results go to ``benchmarks/results/solve_time.csv`` (rewritten after every
finished run, merged with rows already there: a row is keyed by instance,
solver and objective) and ``benchmarks/results/solve_time.md``.

Examples
--------
::

    python benchmarks/solve_time.py                       # every instance
    python benchmarks/solve_time.py instances/tiny_*.yaml --time-limit 60
    python benchmarks/solve_time.py sew_resnet18_1mb --solvers highs --objectives energy
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import csv
import datetime as dt
import math
import multiprocessing as mp
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INSTANCES_DIR = ROOT / "instances"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CSV_NAME = "solve_time.csv"
MD_NAME = "solve_time.md"

SOLVERS = ("cpsat", "highs")
OBJECTIVES = ("traffic", "energy")
HARD_TIMEOUT_MARGIN_S = 300.0
"""Seconds a run may take beyond its time limit before it is killed."""

COLUMNS = (
    "instance", "solver", "objective", "status", "objective_value", "bound", "gap",
    "runtime_s", "model_build_s", "solve_s", "variables", "constraints", "columns",
    "columns_priced", "master_solves", "frames_direct", "frames_built", "local_solves",
    "compulsory_traffic_bits",
)
"""``variables`` and ``constraints``: the largest frame MIP the run solved."""
KEY = ("instance", "solver", "objective")
STAT_COLUMNS = ("model_build_s", "solve_s", "variables", "constraints", "columns",
                "columns_priced", "master_solves", "frames_direct", "frames_built",
                "local_solves")
INT_STATS = frozenset(STAT_COLUMNS) - {"model_build_s", "solve_s"}

Row = dict[str, Any]


# ---------------------------------------------------------------------------
# Worker side (runs in the spawned subprocess)
# ---------------------------------------------------------------------------

def run_one(instance_path: str, solver: str, objective: str, time_limit_s: float,
            threads: int, seed: int) -> Row:
    """Load an instance, solve it once and return the CSV row.

    Parameters
    ----------
    instance_path
        Instance YAML file.
    solver
        ``cpsat`` or ``highs``.
    objective
        ``traffic`` or ``energy``.
    time_limit_s
        Solver time limit in seconds.
    threads
        Solver threads.
    seed
        Solver random seed.

    Returns
    -------
    dict
        One row keyed by :data:`COLUMNS` (missing statistics are ``None``).
    """
    from stems_opt.cost.traffic import compulsory_traffic_bits
    from stems_opt.io import load_instance
    from stems_opt.problem import Objective
    from stems_opt.solvers import solve

    problem = load_instance(instance_path).with_objective(Objective(objective))
    result = solve(problem, solver=solver, time_limit_s=time_limit_s, threads=threads,
                   seed=seed)
    row: Row = dict.fromkeys(COLUMNS)
    row.update(instance=Path(instance_path).stem, solver=solver, objective=objective,
               status=result.status.value, objective_value=result.objective_value,
               bound=result.bound, gap=result.gap, runtime_s=result.runtime_s,
               compulsory_traffic_bits=compulsory_traffic_bits(problem.network))
    for key in STAT_COLUMNS:
        value = result.stats.get(key)
        if value is not None and key in INT_STATS and math.isfinite(value):
            value = int(value)
        row[key] = value
    if result.message:
        row["_message"] = result.message
    return row


# ---------------------------------------------------------------------------
# Parent side: one subprocess per run, hard timeouts
# ---------------------------------------------------------------------------

@dataclass
class Task:
    """One run to do in its own subprocess.

    Parameters
    ----------
    label
        Short description for progress lines.
    fn
        Module-level function run in the subprocess; returns a row or rows.
    args
        Its positional arguments (picklable).
    hard_timeout_s
        Wall-clock seconds after which the subprocess is killed.
    on_failure
        Builds the row(s) to record when the run times out, crashes or raises,
        from the status (``timeout``, ``crashed``, ``error``) and the elapsed time.
    """

    label: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    hard_timeout_s: float
    on_failure: Callable[[str, float], Any]


@dataclass
class _Running:
    task: Task
    executor: cf.ProcessPoolExecutor
    future: cf.Future[Any]
    pid: int | None
    start: float
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = self.start + self.task.hard_timeout_s


def _kill(run: _Running) -> None:
    if run.pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(run.pid, signal.SIGKILL)
    run.executor.shutdown(wait=False, cancel_futures=True)


def _start(task: Task, ctx: mp.context.BaseContext) -> _Running:
    executor = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
    pid: int | None = None
    try:
        # The one worker reports its pid first, so a hung run can be killed.
        pid = executor.submit(os.getpid).result(timeout=120)
        future = executor.submit(task.fn, *task.args)
    except Exception as exc:  # the subprocess did not start: record the run as crashed
        future = cf.Future()
        future.set_exception(cf.BrokenExecutor(f"worker did not start: {exc}"))
    return _Running(task, executor, future, pid, time.monotonic())


def run_tasks(tasks: Sequence[Task], jobs: int, on_done: Callable[[Task, Any, str], None]
              ) -> None:
    """Run ``tasks`` in isolated spawn subprocesses, at most ``jobs`` at a time.

    Parameters
    ----------
    tasks
        What to run.
    jobs
        Concurrent subprocesses.
    on_done
        Called in the parent after every task with the task, its value (or
        the ``on_failure`` value) and a one-word outcome (``ok``, ``timeout``,
        ``crashed``, ``error``).
    """
    ctx = mp.get_context("spawn")
    pending = list(tasks)
    pending.reverse()
    running: dict[cf.Future[Any], _Running] = {}
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                run = _start(pending.pop(), ctx)
                running[run.future] = run
            now = time.monotonic()
            wait_s = max(0.0, min(r.deadline for r in running.values()) - now)
            done, _ = cf.wait(list(running), timeout=wait_s, return_when=cf.FIRST_COMPLETED)
            now = time.monotonic()
            for fut in done:
                run = running.pop(fut)
                elapsed = now - run.start
                try:
                    value, outcome = fut.result(), "ok"
                except cf.BrokenExecutor:
                    value, outcome = run.task.on_failure("crashed", elapsed), "crashed"
                except Exception as exc:
                    print(f"  {run.task.label}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    value, outcome = run.task.on_failure("error", elapsed), "error"
                run.executor.shutdown(wait=True)
                on_done(run.task, value, outcome)
            for fut, run in list(running.items()):
                if fut not in done and now >= run.deadline:
                    running.pop(fut)
                    _kill(run)
                    on_done(run.task, run.task.on_failure("timeout", now - run.start),
                            "timeout")
    finally:
        for run in running.values():
            _kill(run)


# ---------------------------------------------------------------------------
# CSV and markdown
# ---------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_rows(path: Path) -> list[Row]:
    """Rows of an existing CSV (all values as strings), or none.

    Parameters
    ----------
    path
        CSV file written by this script.

    Returns
    -------
    list of dict
    """
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [dict(r) for r in csv.DictReader(f)]


def write_csv(path: Path, rows: Iterable[Row], columns: Sequence[str]) -> None:
    """Write ``rows`` atomically (temporary file in the same directory, then rename).

    Parameters
    ----------
    path
        Destination.
    rows
        Rows; keys outside ``columns`` are ignored.
    columns
        Column order.
    """
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in columns])
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically.

    Parameters
    ----------
    path
        Destination.
    text
        Contents.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def as_float(value: Any) -> float | None:
    """A CSV cell or row value as a float (``None`` when empty or not a number).

    Parameters
    ----------
    value
        ``None``, a number or its text.

    Returns
    -------
    float or None
    """
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt_value(value: Any) -> str:
    """A number for a markdown table: thousands separators, at most 2 decimals.

    Parameters
    ----------
    value
        ``None``, a number or its text.

    Returns
    -------
    str
    """
    v = as_float(value)
    if v is None:
        return "—"
    if not math.isfinite(v):
        return str(v)
    return f"{v:,.0f}" if v == int(v) else f"{v:,.2f}"


def fmt_gap_pct(value: Any) -> str:
    """A gap (fraction) as a percentage for a markdown table.

    Parameters
    ----------
    value
        ``None``, a number or its text.

    Returns
    -------
    str
    """
    v = as_float(value)
    if v is None:
        return "—"
    return f"{100 * v:.2f}" if math.isfinite(v) else str(v)


def machine_line() -> str:
    """The machine and the date, for the markdown summaries.

    Returns
    -------
    str
    """
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"Machine: {os.cpu_count()} CPUs (os.cpu_count()), {platform.platform()}, "
            f"Python {platform.python_version()}; date {now}.")


def summary_markdown(rows: Sequence[Row], args: argparse.Namespace) -> str:
    """The markdown summary of ``rows``.

    Parameters
    ----------
    rows
        CSV rows.
    args
        Parsed options of the latest run.

    Returns
    -------
    str
    """
    lines = [
        "# Solve time",
        "",
        "| instance | solver | objective | status | value | gap % | runtime s | build s "
        "| solve s | columns priced | frames direct / MIP | largest frame MIP (vars x rows) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def sec(v: Any) -> str:
        f = as_float(v)
        return "—" if f is None else f"{f:.2f}"

    for r in rows:
        lines.append(
            f"| {r['instance']} | {r['solver']} | {r['objective']} | {r['status']} | "
            f"{fmt_value(r.get('objective_value'))} | {fmt_gap_pct(r.get('gap'))} | "
            f"{sec(r.get('runtime_s'))} | {sec(r.get('model_build_s'))} | "
            f"{sec(r.get('solve_s'))} | {r.get('columns_priced') or 0} of "
            f"{r.get('columns') or 0} | {r.get('frames_direct') or 0} / "
            f"{r.get('local_solves') or 0} | {r.get('variables') or 0} x "
            f"{r.get('constraints') or 0} |")
    lines += [
        "",
        "Value: off-chip traffic in bits (traffic) or total energy in pJ (energy). "
        "Build: problem data and column bounds; solve: pricing and the master. "
        "Frames direct: priced by scoring their cheapest choices (no MIP). "
        f"Latest run: time limit {args.time_limit:g} s, {args.threads} thread(s) per run, "
        f"{args.jobs} run(s) at a time, seed {args.seed}.",
        "",
        machine_line(),
        "",
    ]
    return "\n".join(lines)


def _sort_key(row: Row) -> tuple[Any, ...]:
    return (row["instance"],
            SOLVERS.index(row["solver"]) if row["solver"] in SOLVERS else len(SOLVERS),
            row["solver"],
            OBJECTIVES.index(row["objective"]) if row["objective"] in OBJECTIVES else 2)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def resolve_instances(names: Sequence[str]) -> list[Path]:
    """Instance files from paths or bare names (``tiny_chain`` -> ``instances/tiny_chain.yaml``).

    Parameters
    ----------
    names
        Paths or names; empty for every instance in ``instances/``.

    Returns
    -------
    list of Path

    Raises
    ------
    ValueError
        When a name matches no file.
    """
    if not names:
        return sorted(INSTANCES_DIR.glob("*.yaml"))
    out = []
    for name in names:
        p = Path(name)
        if not p.exists() and (INSTANCES_DIR / f"{name}.yaml").exists():
            p = INSTANCES_DIR / f"{name}.yaml"
        if not p.is_file():
            raise ValueError(f"error: instance not found: {name}")
        out.append(p)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser.

    Returns
    -------
    argparse.ArgumentParser
    """
    ap = argparse.ArgumentParser(
        description="Solve every instance with both backends and both objectives, one "
                    "subprocess per run; write benchmarks/results/solve_time.{csv,md}.")
    ap.add_argument("instances", nargs="*",
                    help="instance files or names (default: every instances/*.yaml)")
    ap.add_argument("--time-limit", type=float, default=120.0,
                    help="solver time limit per run, seconds (default 120); a run is killed "
                         f"after time limit + {HARD_TIMEOUT_MARGIN_S:g} s")
    ap.add_argument("--threads", type=int, default=1, help="solver threads per run (default 1)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time, each in its own subprocess (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="solver seed (default 0)")
    ap.add_argument("--solvers", default=",".join(SOLVERS),
                    help="comma-separated backends (default cpsat,highs)")
    ap.add_argument("--objectives", default=",".join(OBJECTIVES),
                    help="comma-separated objectives (default traffic,energy)")
    ap.add_argument("--fresh", action="store_true",
                    help="start a new CSV instead of updating the rows already there")
    return ap


def split_choices(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """Parse a comma-separated option restricted to ``allowed``.

    Parameters
    ----------
    text
        The option's value.
    allowed
        Accepted items.
    what
        The option's name, for the error message.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        When an item is not allowed or there is none.
    """
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise ValueError(f"error: {what} must be among {', '.join(allowed)} (got {text!r})")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark.

    Parameters
    ----------
    argv
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every run finished (whatever its status), 1 when a run timed
        out, crashed or raised, 2 on bad usage.
    """
    args = build_parser().parse_args(argv)
    try:
        solvers = split_choices(args.solvers, SOLVERS, "--solvers")
        objectives = split_choices(args.objectives, OBJECTIVES, "--objectives")
        paths = resolve_instances(args.instances)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.time_limit <= 0 or args.threads < 1 or args.jobs < 1:
        print("error: --time-limit, --threads and --jobs must be positive", file=sys.stderr)
        return 2

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = RESULTS_DIR / CSV_NAME, RESULTS_DIR / MD_NAME
    rows: dict[tuple[str, ...], Row] = {}
    if not args.fresh:
        rows = {tuple(r.get(k, "") for k in KEY): r for r in read_rows(csv_path)}

    def failure(instance: str, solver: str, objective: str) -> Callable[[str, float], Row]:
        def make(status: str, elapsed: float) -> Row:
            row: Row = dict.fromkeys(COLUMNS)
            row.update(instance=instance, solver=solver, objective=objective, status=status,
                       runtime_s=elapsed)
            return row
        return make

    tasks = [
        Task(label=f"{p.stem} {s} {o}", fn=run_one,
             args=(str(p), s, o, args.time_limit, args.threads, args.seed),
             hard_timeout_s=args.time_limit + HARD_TIMEOUT_MARGIN_S,
             on_failure=failure(p.stem, s, o))
        for p in paths for s in solvers for o in objectives
    ]
    done_count = 0
    failures = 0

    def sorted_rows() -> list[Row]:
        return sorted(rows.values(), key=_sort_key)

    def on_done(task: Task, row: Row, outcome: str) -> None:
        nonlocal done_count, failures
        done_count += 1
        failures += outcome != "ok"
        rows[tuple(row[k] for k in KEY)] = row
        write_csv(csv_path, sorted_rows(), COLUMNS)
        write_text(md_path, summary_markdown(sorted_rows(), args))
        rt = as_float(row.get("runtime_s")) or 0.0
        msg = f" ({row['_message']})" if row.get("_message") else ""
        print(f"[{done_count}/{len(tasks)}] {task.label}: {row['status']} "
              f"value {fmt_value(row.get('objective_value'))} gap "
              f"{fmt_gap_pct(row.get('gap'))} % in {rt:.1f} s{msg}", file=sys.stderr)

    print(f"{len(tasks)} runs ({len(paths)} instances x {len(solvers)} solvers x "
          f"{len(objectives)} objectives), time limit {args.time_limit:g} s, "
          f"{args.threads} thread(s), {args.jobs} job(s)", file=sys.stderr)
    run_tasks(tasks, args.jobs, on_done)
    final = sorted_rows()
    write_csv(csv_path, final, COLUMNS)
    write_text(md_path, summary_markdown(final, args))
    print(summary_markdown(final, args))
    print(f"wrote {csv_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
