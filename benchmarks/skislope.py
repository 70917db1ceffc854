"""Ski-slope benchmark: networks x global-buffer sizes x objectives, one subprocess per run.

For every point: whether the optimum was proven and when (or the final gap at
the time limit), how long the search took to find a mapping strictly better
than the best named schedule (TB-LBL, TB-F, ST-F; scored before the solve, not
counted in its time), and the run's peak memory (resident set of the
subprocess and of the named schedules' second process, whichever is larger).

Results go to ``benchmarks/results/skislope.csv`` (merged with rows already
there, keyed by network, buffer and objective) and
``benchmarks/results/skislope.md``.

Examples
--------
::

    python benchmarks/skislope.py                                  # everything
    python benchmarks/skislope.py --networks red_lif sew_resnet152 --sizes 128kb 256kb 512kb \\
        --objectives traffic --time-limit 60
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_time import (
    Task,
    as_float,
    read_rows,
    run_tasks,
    write_csv,
    write_text,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CSV_NAME = "skislope.csv"
MD_NAME = "skislope.md"
NETWORKS = ("sew_resnet18", "sew_resnet18_5plif", "red_lif", "sew_resnet152")
SIZES = ("128kb", "256kb", "384kb", "512kb", "1mb", "2mb")
OBJECTIVES = ("traffic", "energy")
HARD_TIMEOUT_MARGIN_S = 300.0
COLUMNS = ("network", "buffer", "objective", "status", "objective_value", "bound", "gap",
           "runtime_s", "best_named", "best_named_value", "first_beat_named_s",
           "peak_memory_mb", "time_limit_s")
KEY = ("network", "buffer", "objective")

Row = dict[str, Any]


def run_one(network: str, buffer: str, objective: str, time_limit_s: float, solver: str,
            threads: int, seed: int) -> Row:
    """Solve one point in this (sub)process and return its row.

    The network and its search-space options come from
    ``instances/<network>_1mb.yaml``, the accelerator from
    ``models/hardware/edge_<buffer>.yaml``.
    """
    import resource
    import time

    from stems_opt.cost.loops import clear_nest_table
    from stems_opt.heuristics import named_schedule
    from stems_opt.incumbents import FALLBACK_SCHEDULES
    from stems_opt.io import load_hardware, load_instance
    from stems_opt.problem import Objective, Problem
    from stems_opt.solvers import solve

    base = load_instance(ROOT / "instances" / f"{network}_1mb.yaml")
    hw = load_hardware(ROOT / "models" / "hardware" / f"edge_{buffer}.yaml")
    problem = Problem(base.network, hw, Objective(objective), f"{network}_{buffer}", (),
                      base.max_segment_layers)
    best_name, best = None, math.inf
    cap = problem.max_segment_layers
    for name in FALLBACK_SCHEDULES:
        r = named_schedule(problem, name)
        # Only schedules inside the search space count (as in the solver's fallback).
        if r.mapping is not None and cap is not None and any(
                len(s.layers) > cap for s in r.mapping.segments):
            continue
        if r.feasible and r.objective_value < best:
            best_name, best = name, r.objective_value
    # The solve starts from an empty nest table, as `stems-opt solve --nest-cache off`
    # does: the named schedules scored above must not warm it (their steps' nests).
    clear_nest_table()
    beat: list[float] = []

    def on_incumbent(elapsed_s: float, value: float) -> None:
        if not beat and value < best * (1 - 1e-12):
            beat.append(elapsed_s)

    start = time.perf_counter()
    result = solve(problem, solver=solver, time_limit_s=time_limit_s, threads=threads,
                   seed=seed, on_incumbent=on_incumbent)
    runtime = time.perf_counter() - start
    if not beat and result.objective_value is not None and result.objective_value < best:
        beat.append(runtime)  # (found by the final combination of segments)
    return dict(network=network, buffer=buffer, objective=objective,
                status=result.status.value, objective_value=result.objective_value,
                bound=result.bound, gap=result.gap, runtime_s=runtime, best_named=best_name,
                best_named_value=None if best_name is None else best,
                first_beat_named_s=beat[0] if beat else None,
                # The larger of this process and the named schedules' second process.
                peak_memory_mb=max(resource.getrusage(who).ru_maxrss for who in (
                    resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024,
                time_limit_s=time_limit_s)


def _failure_row(network: str, buffer: str, objective: str, time_limit_s: float):
    def make(status: str, elapsed: float) -> Row:
        return dict(network=network, buffer=buffer, objective=objective, status=status,
                    runtime_s=elapsed, time_limit_s=time_limit_s)
    return make


def _cell(r: Row) -> str:
    """``proven, 18 s`` / ``gap 12 % at 60 s`` / the failure status."""
    status = r.get("status")
    runtime = as_float(r.get("runtime_s"))
    t = "" if runtime is None else f"{runtime:.0f} s" if runtime >= 10 else f"{runtime:.1f} s"
    if status == "optimal":
        return f"proven, {t}"
    gap = as_float(r.get("gap"))
    if status == "feasible" and gap is not None:
        return f"gap {100 * gap:.1f} % at {t}"
    return f"{status} ({t})"


def _beat(r: Row) -> str:
    best = as_float(r.get("best_named_value"))
    value = as_float(r.get("objective_value"))
    first = as_float(r.get("first_beat_named_s"))
    if best is None:
        return "no named fits" if value is not None else ""
    if first is None:
        return "=" if value is not None and value <= best else "no"
    return f"{first:.1f} s ({100 * (1 - value / best):.1f} % below)" if value else ""


def render_md(rows: list[Row], note: str) -> str:
    """The markdown report: one table per objective, then per-point details."""
    out = ["# Ski slope: proofs across global-buffer sizes", "",
           f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
           f"{note}", ""]
    sizes = [s for s in SIZES if any(r["buffer"] == s for r in rows)]
    nets = [n for n in NETWORKS if any(r["network"] == n for r in rows)]
    nets += sorted({r["network"] for r in rows} - set(nets))
    for objective in OBJECTIVES:
        got = {(r["network"], r["buffer"]): r for r in rows if r["objective"] == objective}
        if not got:
            continue
        out += [f"## {objective}", "", "| network \\ global buffer | " + " | ".join(
            s.upper().replace("KB", " KB").replace("MB", " MB") for s in sizes) + " |",
            "|---|" + "---|" * len(sizes)]
        for n in nets:
            out.append(f"| {n} | " + " | ".join(
                _cell(got[(n, s)]) if (n, s) in got else "" for s in sizes) + " |")
        out += ["", "First mapping strictly better than the best named schedule "
                "(time into the search, and how far below it the final mapping is):", "",
                "| network \\ global buffer | " + " | ".join(sizes) + " |",
                "|---|" + "---|" * len(sizes)]
        for n in nets:
            out.append(f"| {n} | " + " | ".join(
                _beat(got[(n, s)]) if (n, s) in got else "" for s in sizes) + " |")
        out.append("")
    out += ["## Every point", "", "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS)]
    for r in rows:
        out.append("| " + " | ".join(_detail(c, r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(out) + "\n"


def _detail(column: str, value: Any) -> str:
    """One cell of the per-point table: seconds to 0.1, memory in whole MB."""
    number = as_float(value)
    if value in (None, "") or number is None:
        return "" if value is None else str(value)
    if column in ("runtime_s", "first_beat_named_s"):
        return f"{number:.1f}"
    if column == "peak_memory_mb":
        return f"{number:.0f}"
    if column == "gap":
        return f"{number:.4f}"
    if column in ("objective_value", "bound", "best_named_value"):
        return f"{number:,.0f}" if number.is_integer() else f"{number:,.3f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS))
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    ap.add_argument("--time-limit", type=float, default=180.0)
    ap.add_argument("--solver", default="cpsat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--note", default="2 cores")
    args = ap.parse_args(argv)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = RESULTS_DIR / CSV_NAME, RESULTS_DIR / MD_NAME
    rows = {tuple(r[k] for k in KEY): r for r in read_rows(csv_path)}
    tasks = [Task(f"{n} {s} {o}", run_one,
                  (n, s, o, args.time_limit, args.solver, args.threads, args.seed),
                  args.time_limit + HARD_TIMEOUT_MARGIN_S,
                  _failure_row(n, s, o, args.time_limit))
             for o in args.objectives for n in args.networks for s in args.sizes]

    def done(task: Task, row: Row, outcome: str) -> None:
        rows[tuple(row[k] for k in KEY)] = row
        print(f"{task.label}: {outcome} {_cell(row)}", flush=True)
        ordered = sorted(rows.values(), key=lambda r: (
            OBJECTIVES.index(r["objective"]) if r["objective"] in OBJECTIVES else 9,
            NETWORKS.index(r["network"]) if r["network"] in NETWORKS else 99,
            SIZES.index(r["buffer"]) if r["buffer"] in SIZES else 99))
        write_csv(csv_path, ordered, COLUMNS)
        write_text(md_path, render_md(ordered, args.note))

    run_tasks(tasks, args.jobs, done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
