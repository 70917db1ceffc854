"""Named STEMS schedules (ST-LBL, TB-LBL, TB-F, ST-F) against the optimiser.

For every instance and both objectives (traffic, energy), scores the named
schedules with :func:`stems_opt.heuristics.named_schedule` and runs
:func:`stems_opt.solvers.solve` (CP-SAT by default), each in its own ``spawn``
subprocess with a hard wall-clock limit (see ``solve_time.py``). Writes

- ``benchmarks/results/compare_named.csv``: one row per instance, objective
  and schedule (the solver's row has the solver's name as schedule), with
  ``ratio_to_best_solver_value`` = the schedule's objective value / the
  solver's (empty when either has no mapping that fits);
- ``benchmarks/results/compare_named.md``: per instance and objective, the
  ratio best named schedule / solver value (the headline numbers);
- ``benchmarks/results/compare_named.png`` when matplotlib is importable
  (optional extra ``plots``): grouped bars of traffic per schedule and
  instance, the optimiser's bar highlighted.

Examples
--------
::

    python benchmarks/compare_named.py          # SEW-ResNet-18, 5-PLIF, RED-LIF + tiny ones
    python benchmarks/compare_named.py instances/tiny_*.yaml --time-limit 60
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any


def _load_solve_time() -> ModuleType:
    """The sibling ``solve_time`` module (subprocess runner, CSV helpers).

    Imported without writing ``__pycache__`` next to it: the benchmarks
    write only under ``benchmarks/results/``.
    """
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    old = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        return importlib.import_module("solve_time")
    finally:
        sys.dont_write_bytecode = old


st = _load_solve_time()

ROOT: Path = st.ROOT
RESULTS_DIR: Path = st.RESULTS_DIR
CSV_NAME = "compare_named.csv"
MD_NAME = "compare_named.md"
PNG_NAME = "compare_named.png"

SCHEDULES = ("ST-LBL", "TB-LBL", "TB-F", "ST-F")
OBJECTIVES = ("traffic", "energy")
DEFAULT_INSTANCES = ("sew_resnet18_1mb", "sew_resnet18_5plif_1mb", "red_lif_1mb")
"""Default instances besides every ``instances/tiny_*.yaml``."""
HARD_TIMEOUT_MARGIN_S: float = st.HARD_TIMEOUT_MARGIN_S

COLUMNS = (
    "instance", "objective", "schedule", "status", "traffic_bits", "weights_bits", "state_bits",
    "activations_bits", "energy_pj", "ratio_to_best_solver_value",
)
KEY = ("instance", "objective", "schedule")
FITS = ("optimal", "feasible")
"""Statuses of a mapping that fits the global buffer."""

Row = dict[str, Any]


# ---------------------------------------------------------------------------
# Worker side (runs in the spawned subprocess)
# ---------------------------------------------------------------------------

def _row(instance: str, objective: str, schedule: str, result: Any) -> Row:
    row: Row = dict.fromkeys(COLUMNS)
    row.update(instance=instance, objective=objective, schedule=schedule,
               status=result.status.value)
    cost = result.cost
    if cost is not None:
        by_class = cost.traffic.by_class()
        row.update(traffic_bits=cost.traffic_bits, weights_bits=by_class["weights"],
                   state_bits=by_class["state"], activations_bits=by_class["activations"],
                   energy_pj=cost.total_energy_pj)
    row.update(_bound=result.bound, _gap=result.gap, _runtime_s=result.runtime_s)
    if result.message:
        row["_message"] = result.message
    return row


def score_named(instance_path: str, objective: str, schedules: Sequence[str]) -> list[Row]:
    """Score the named schedules of one instance for one objective.

    Parameters
    ----------
    instance_path
        Instance YAML file.
    objective
        ``traffic`` or ``energy`` (the greedy residency rule minimises it).
    schedules
        Schedule names (``ST-LBL``, ``TB-LBL``, ``TB-F``, ``ST-F`` or hybrids).

    Returns
    -------
    list of dict
        One row per schedule (keys :data:`COLUMNS`, ratio left empty).
    """
    from stems_opt.heuristics import named_schedule
    from stems_opt.io import load_instance
    from stems_opt.problem import Objective

    problem = load_instance(instance_path).with_objective(Objective(objective))
    name = Path(instance_path).stem
    return [_row(name, objective, s, named_schedule(problem, s)) for s in schedules]


def run_solver(instance_path: str, objective: str, solver: str, time_limit_s: float,
               threads: int, seed: int) -> list[Row]:
    """Solve one instance for one objective.

    Parameters
    ----------
    instance_path
        Instance YAML file.
    objective
        ``traffic`` or ``energy``.
    solver
        ``cpsat`` or ``highs``.
    time_limit_s
        Solver time limit in seconds.
    threads
        Solver threads.
    seed
        Solver random seed.

    Returns
    -------
    list of dict
        One row, schedule = the solver's name.
    """
    from stems_opt.io import load_instance
    from stems_opt.problem import Objective
    from stems_opt.solvers import solve

    problem = load_instance(instance_path).with_objective(Objective(objective))
    result = solve(problem, solver=solver, time_limit_s=time_limit_s, threads=threads,
                   seed=seed)
    return [_row(Path(instance_path).stem, objective, solver, result)]


# ---------------------------------------------------------------------------
# Ratios, markdown, plot
# ---------------------------------------------------------------------------

def value_of(row: Row) -> float | None:
    """The row's value for its own objective (traffic bits or energy pJ), if it fits.

    Parameters
    ----------
    row
        A CSV row.

    Returns
    -------
    float or None
        ``None`` when the mapping does not fit or there is none.
    """
    if row.get("status") not in FITS:
        return None
    return st.as_float(row.get("traffic_bits" if row["objective"] == "traffic" else "energy_pj"))


def add_ratios(rows: Sequence[Row], solver: str) -> None:
    """Fill ``ratio_to_best_solver_value`` of every row in place.

    Parameters
    ----------
    rows
        All CSV rows.
    solver
        The solver whose row is the reference.
    """
    ref = {(r["instance"], r["objective"]): value_of(r) for r in rows if r["schedule"] == solver}
    for r in rows:
        v, base = value_of(r), ref.get((r["instance"], r["objective"]))
        r["ratio_to_best_solver_value"] = (v / base if v is not None and base else None)


def _fmt_sig(value: float | None, digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits (no exponent), ``—`` when missing."""
    if value is None:
        return "—"
    if value == 0 or not math.isfinite(value):
        return str(value)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def _fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def summary_markdown(rows: Sequence[Row], instances: Sequence[str], solver: str,
                     args: argparse.Namespace) -> str:
    """The markdown summary: headline ratios, then every schedule's ratio.

    Parameters
    ----------
    rows
        All CSV rows (ratios filled).
    instances
        Instance order.
    solver
        The reference solver.
    args
        Parsed options of the latest run.

    Returns
    -------
    str
    """
    by_key = {(r["instance"], r["objective"], r["schedule"]): r for r in rows}
    pairs = [(i, o) for i in instances for o in OBJECTIVES
             if any((i, o, s) in by_key for s in (*SCHEDULES, solver))]
    head = [
        "# Named schedules vs the optimiser",
        "",
        f"Best named schedule (ST-LBL, TB-LBL, TB-F, ST-F; only those that fit) against "
        f"{solver}. Values: off-chip traffic in Mbit (traffic) or total energy in µJ (energy).",
        "",
        f"| instance | objective | best named | its value | {solver} status | {solver} value "
        "| gap % | best named / solver |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    detail = [
        "",
        "Every schedule / solver value (`n/f`: does not fit the global buffer):",
        "",
        "| instance | objective | " + " | ".join(SCHEDULES) + " |",
        "|---|---|" + "---:|" * len(SCHEDULES),
    ]
    not_proven = False
    for inst, obj in pairs:
        scale = 1e6  # bits -> Mbit, pJ -> µJ
        named = [by_key[(inst, obj, s)] for s in SCHEDULES if (inst, obj, s) in by_key]
        fitting = [r for r in named if value_of(r) is not None]
        best = min(fitting, key=lambda r: value_of(r) or 0.0) if fitting else None
        opt = by_key.get((inst, obj, solver))
        opt_v = value_of(opt) if opt else None
        status = opt["status"] if opt else "not run"
        gap = st.fmt_gap_pct(opt.get("_gap")) if opt else "—"
        if status == "optimal":
            gap = "0.00"
        elif opt_v is not None:
            not_proven = True
            status += " *"
        head.append(
            f"| {inst} | {obj} | {best['schedule'] if best else 'none fits'} | "
            f"{_fmt_sig(None if best is None else (value_of(best) or 0.0) / scale)} | {status} | "
            f"{_fmt_sig(None if opt_v is None else opt_v / scale)} | {gap} | "
            f"{_fmt_ratio(best['ratio_to_best_solver_value'] if best else None)} |")
        cells = []
        for s in SCHEDULES:
            r = by_key.get((inst, obj, s))
            if r is None:
                cells.append("—")
            elif value_of(r) is None:
                cells.append("n/f")
            else:
                cells.append(_fmt_ratio(st.as_float(r["ratio_to_best_solver_value"])))
        detail.append(f"| {inst} | {obj} | " + " | ".join(cells) + " |")
    notes = [""]
    if not_proven:
        notes += ["\\* not proven optimal within the time limit: the ratio is against the best "
                  "mapping found, so the true ratio to the optimum is at least this.", ""]
    notes += [
        f"Latest run: {solver}, time limit {args.time_limit:g} s, {args.threads} thread(s), "
        f"seed {args.seed}.",
        "",
        st.machine_line(),
        "",
    ]
    return "\n".join(head + detail + notes)


def plot(rows: Sequence[Row], instances: Sequence[str], solver: str, path: Path) -> bool:
    """Grouped bars of traffic (Mbit) per schedule per instance, the optimiser highlighted.

    Uses the traffic-objective rows. Skipped quietly when matplotlib is not
    importable.

    Parameters
    ----------
    rows
        All CSV rows (ratios filled).
    instances
        Instance order.
    solver
        The reference solver (its bar is highlighted).
    path
        PNG to write.

    Returns
    -------
    bool
        Whether the plot was written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return False
    by_key = {(r["instance"], r["schedule"]): r for r in rows if r["objective"] == "traffic"}
    insts = [i for i in instances if any((i, s) in by_key for s in (*SCHEDULES, solver))]
    if not insts:
        return False
    names = (*SCHEDULES, solver)
    colors = ("#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#e6550d")
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(insts) + 2), 4.5))
    values = []
    for j, name in enumerate(names):
        for i, inst in enumerate(insts):
            r = by_key.get((inst, name))
            mbit = st.as_float(r.get("traffic_bits")) if r else None
            if mbit is None:
                continue
            mbit /= 1e6
            values.append(mbit)
            fits = r is not None and r.get("status") in FITS
            is_opt = name == solver
            ax.bar(i - 0.4 + (j + 0.5) * width, mbit, width, color=colors[j],
                   edgecolor="black" if is_opt else colors[j], linewidth=1.5 if is_opt else 0.5,
                   hatch=None if fits else "//", alpha=1.0 if fits else 0.45)
            ratio = st.as_float(r.get("ratio_to_best_solver_value")) if r else None
            label = "n/f" if not fits else (f"×{ratio:.2f}" if ratio is not None and not is_opt
                                            else "")
            if label:
                ax.annotate(label, (i - 0.4 + (j + 0.5) * width, mbit), ha="center",
                            va="bottom", fontsize=6, rotation=90, xytext=(0, 2),
                            textcoords="offset points")
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 50:
        ax.set_yscale("log")
    ax.set_xticks(range(len(insts)))
    ax.set_xticklabels(insts, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("off-chip traffic (Mbit)")
    ax.set_title("Named schedules vs optimum (traffic objective)")
    statuses = {by_key[(i, solver)]["status"] for i in insts if (i, solver) in by_key}
    opt_label = f"optimum ({solver})" if statuses == {"optimal"} else f"{solver} (best found)"
    handles = [Patch(facecolor=c, label=n) for c, n in zip(colors[:-1], SCHEDULES, strict=True)]
    handles.append(Patch(facecolor=colors[-1], edgecolor="black", linewidth=1.5,
                         label=opt_label))
    handles.append(Patch(facecolor="white", edgecolor="grey", hatch="//",
                         label="does not fit (n/f)"))
    ax.legend(handles=handles, fontsize=7, ncol=len(handles), loc="upper center",
              bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.margins(y=0.12)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=150)
    plt.close(fig)
    tmp.replace(path)
    return True


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def default_instances() -> list[str]:
    """The default instance names: SEW-ResNet-18, its 5-PLIF variant, RED-LIF, every tiny one.

    Returns
    -------
    list of str
    """
    tiny = sorted(p.stem for p in st.INSTANCES_DIR.glob("tiny_*.yaml"))
    return [*DEFAULT_INSTANCES, *tiny]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser.

    Returns
    -------
    argparse.ArgumentParser
    """
    ap = argparse.ArgumentParser(
        description="Score ST-LBL, TB-LBL, TB-F and ST-F against the optimiser for traffic and "
                    "energy; write benchmarks/results/compare_named.{csv,md,png}.")
    ap.add_argument("instances", nargs="*",
                    help="instance files or names (default: " + ", ".join(DEFAULT_INSTANCES)
                         + " and every instances/tiny_*.yaml)")
    ap.add_argument("--time-limit", type=float, default=120.0,
                    help="solver time limit per run, seconds (default 120); a run is killed "
                         f"after time limit + {HARD_TIMEOUT_MARGIN_S:g} s")
    ap.add_argument("--solver", choices=st.SOLVERS, default="cpsat",
                    help="reference solver (default cpsat)")
    ap.add_argument("--threads", type=int, default=1, help="solver threads (default 1)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time, each in its own subprocess (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="solver seed (default 0)")
    ap.add_argument("--objectives", default=",".join(OBJECTIVES),
                    help="comma-separated objectives (default traffic,energy)")
    ap.add_argument("--fresh", action="store_true",
                    help="start a new CSV instead of updating the rows already there")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison.

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
        objectives = st.split_choices(args.objectives, OBJECTIVES, "--objectives")
        paths = st.resolve_instances(args.instances or default_instances())
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.time_limit <= 0 or args.threads < 1 or args.jobs < 1:
        print("error: --time-limit, --threads and --jobs must be positive", file=sys.stderr)
        return 2

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    csv_path, md_path, png_path = RESULTS_DIR / CSV_NAME, RESULTS_DIR / MD_NAME, \
        RESULTS_DIR / PNG_NAME
    rows: dict[tuple[str, ...], Row] = {}
    if not args.fresh:
        rows = {tuple(r.get(k, "") for k in KEY): r for r in st.read_rows(csv_path)}
    instances = [p.stem for p in paths]
    seen = set(instances)
    instances += sorted({r["instance"] for r in rows.values()} - seen)
    order = {name: i for i, name in enumerate(instances)}
    sched_order = {s: i for i, s in enumerate((*SCHEDULES, *st.SOLVERS))}

    def failure(instance: str, objective: str, schedules: Sequence[str]
                ) -> Callable[[str, float], list[Row]]:
        def make(status: str, elapsed: float) -> list[Row]:
            out = []
            for s in schedules:
                row: Row = dict.fromkeys(COLUMNS)
                row.update(instance=instance, objective=objective, schedule=s, status=status,
                           _runtime_s=elapsed)
                out.append(row)
            return out
        return make

    hard = args.time_limit + HARD_TIMEOUT_MARGIN_S
    tasks = []
    for p in paths:
        for o in objectives:
            tasks.append(st.Task(label=f"{p.stem} {o} named", fn=score_named,
                                 args=(str(p), o, SCHEDULES), hard_timeout_s=hard,
                                 on_failure=failure(p.stem, o, SCHEDULES)))
            tasks.append(st.Task(label=f"{p.stem} {o} {args.solver}", fn=run_solver,
                                 args=(str(p), o, args.solver, args.time_limit, args.threads,
                                       args.seed),
                                 hard_timeout_s=hard,
                                 on_failure=failure(p.stem, o, (args.solver,))))
    done_count = 0
    failures = 0

    def sorted_rows() -> list[Row]:
        out = sorted(rows.values(), key=lambda r: (
            order.get(r["instance"], len(order)), r["instance"],
            OBJECTIVES.index(r["objective"]) if r["objective"] in OBJECTIVES else 2,
            sched_order.get(r["schedule"], len(sched_order)), r["schedule"]))
        add_ratios(out, args.solver)
        return out

    def write_all() -> list[Row]:
        out = sorted_rows()
        st.write_csv(csv_path, out, COLUMNS)
        st.write_text(md_path, summary_markdown(out, instances, args.solver, args))
        return out

    def on_done(task: Any, new_rows: list[Row], outcome: str) -> None:
        nonlocal done_count, failures
        done_count += 1
        failures += outcome != "ok"
        for r in new_rows:
            rows[tuple(r[k] for k in KEY)] = r
        write_all()
        parts = []
        for r in new_rows:
            v = value_of(r)
            parts.append(f"{r['schedule']} {r['status']}"
                         + ("" if v is None else f" {st.fmt_value(v)}"))
        rt = sum(st.as_float(r.get("_runtime_s")) or 0.0 for r in new_rows)
        print(f"[{done_count}/{len(tasks)}] {task.label}: " + "; ".join(parts)
              + f" ({rt:.1f} s)", file=sys.stderr)

    print(f"{len(paths)} instances x {len(objectives)} objectives: named schedules and "
          f"{args.solver} (time limit {args.time_limit:g} s, {args.threads} thread(s), "
          f"{args.jobs} job(s))", file=sys.stderr)
    st.run_tasks(tasks, args.jobs, on_done)
    final = write_all()
    wrote = [csv_path, md_path]
    if plot(final, instances, args.solver, png_path):
        wrote.append(png_path)
    print(summary_markdown(final, instances, args.solver, args))
    print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in wrote), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
