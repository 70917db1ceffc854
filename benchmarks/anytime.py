"""Anytime benchmark: what ``--time-limit 10`` returns on the ski-slope points.

For every network x global-buffer size (the table of ``benchmarks/skislope.py``)
one fresh subprocess solves the point under a short wall-clock limit (default
10 s, as ``stems-opt solve --time-limit 10``: the named schedules are scored
meanwhile in a second process and seed the search) and reports the mapping's
value, the best named schedule (TB-LBL, TB-F, ST-F; scored before the solve,
not counted in its time), whether the mapping is strictly better, the bound
and gap, and when the search first beat the best named schedule. The known
optimum of each point comes from ``benchmarks/results/study_skislope.csv`` or
``benchmarks/results/skislope.csv``, wherever one of them proved it; the
target is a mapping strictly better than the best named schedule wherever the
optimum is, and a gap under 5 %.

Results: ``benchmarks/results/anytime.{csv,md}``, merged with the rows already
there (keyed by network, buffer and objective), so rerunning a few points keeps
the others.

Examples
--------
::

    python benchmarks/anytime.py
    python benchmarks/anytime.py --networks red_lif --sizes 128kb 512kb --time-limit 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from skislope import KEY, NETWORKS, OBJECTIVES, SIZES, run_one
from solve_time import Task, as_float, read_rows, run_tasks, write_csv, write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STUDY = RESULTS_DIR / "study_skislope.csv"
SKISLOPE = RESULTS_DIR / "skislope.csv"
KIB_BITS = 8 * 1024
COLUMNS = ("network", "buffer", "objective", "time_limit_s", "status", "objective_value",
           "best_named", "best_named_value", "strictly_better", "known_optimum",
           "above_optimum", "bound", "gap", "first_beat_named_s", "runtime_s",
           "peak_memory_mb")
Row = dict[str, Any]


def known_optima(study: Path = STUDY,
                 skislope: Path = SKISLOPE) -> dict[tuple[str, str, str], float]:
    """Proven optima of the study and of the ski-slope runs, keyed by (network,
    buffer, objective)."""
    out: dict[tuple[str, str, str], float] = {}
    for r in read_rows(study):
        if r.get("status") == "optimal":
            kb = int(r["gb_capacity_bits"]) // KIB_BITS
            buffer = f"{kb // 1024}mb" if kb % 1024 == 0 else f"{kb}kb"
            out[(r["network"], buffer, r["objective"])] = float(r["value"])
    for r in read_rows(skislope):
        if r.get("status") == "optimal":
            out[(r["network"], r["buffer"], r["objective"])] = float(r["objective_value"])
    return out


def _order(row: Row) -> tuple[int, int, int]:
    return (OBJECTIVES.index(row["objective"]) if row["objective"] in OBJECTIVES else 9,
            NETWORKS.index(row["network"]) if row["network"] in NETWORKS else 99,
            SIZES.index(row["buffer"]) if row["buffer"] in SIZES else 99)


def annotate(row: Row, optima: dict[tuple[str, str, str], float]) -> Row:
    """Add the strictly-better flag, the known optimum and how far above it the
    mapping is."""
    value, named = as_float(row.get("objective_value")), as_float(row.get("best_named_value"))
    row["strictly_better"] = None if value is None or named is None else value < named
    opt = optima.get((row["network"], row["buffer"], row["objective"]))
    row["known_optimum"] = opt
    row["above_optimum"] = None if opt is None or value is None else value / opt - 1
    return row


def _pct(value: Any) -> str:
    v = as_float(value)
    return "-" if v is None else f"{100 * v:.1f} %"


def _mbit(value: Any) -> str:
    v = as_float(value)
    return "-" if v is None else f"{v / 1e6:,.1f}"


def _targets(rows: list[Row]) -> list[str]:
    """The two targets counted, per objective."""
    out = []
    for objective in dict.fromkeys(r["objective"] for r in rows):
        mine = [r for r in rows if r["objective"] == objective]
        beat_needed = [r for r in mine if r.get("known_optimum") is not None
                       and (named := as_float(r.get("best_named_value"))) is not None
                       and r["known_optimum"] < named]
        beat = [r for r in beat_needed if r.get("strictly_better")]
        gap_ok = [r for r in mine if (g := as_float(r.get("gap"))) is not None and g < 0.05]
        out += [f"- {objective}: strictly better than the best named schedule where the "
                f"optimum is: **{len(beat)} of {len(beat_needed)}** points; gap under 5 %: "
                f"**{len(gap_ok)} of {len(mine)}** points."]
    return out


def render_md(rows: list[Row], note: str) -> str:
    """One line per point, and the two targets counted."""
    limits = sorted({v for r in rows if (v := as_float(r.get("time_limit_s"))) is not None})
    limit = "/".join(f"{v:g}" for v in limits) or "?"
    out = ["# Anytime: what a short time limit returns", "",
           f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {note}; "
           f"`python benchmarks/anytime.py --time-limit {limit}`.", "",
           "Value, best named schedule and known optimum in Mbit (traffic) or the "
           "objective's unit; *above opt.*: how far the mapping is above the optimum "
           "proven by the study or the ski slope (`study_skislope.csv`, `skislope.csv`); "
           "*first beat*: seconds into the "
           "search to the first mapping strictly better than the best named schedule.", "",
           *_targets(rows), "",
           "| network | buffer | objective | value | best named | strictly better | "
           "optimum | above opt. | bound | gap | first beat s |",
           "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        first = as_float(r.get("first_beat_named_s"))
        named = "-" if r.get("best_named") in (None, "") else \
            f"{r['best_named']} {_mbit(r.get('best_named_value'))}"
        flag = {True: "yes", False: "no"}.get(r.get("strictly_better"), "-")
        out.append(f"| {r['network']} | {r['buffer']} | {r['objective']} | "
                   f"{_mbit(r.get('objective_value'))} | {named} | {flag} | "
                   f"{_mbit(r.get('known_optimum'))} | {_pct(r.get('above_optimum'))} | "
                   f"{_mbit(r.get('bound'))} | {_pct(r.get('gap'))} | "
                   f"{'-' if first is None else f'{first:.1f}'} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS))
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--objectives", nargs="+", default=["traffic"])
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--solver", default="cpsat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--note", default="2 cores")
    args = ap.parse_args(argv)
    optima = known_optima()
    csv_path = RESULTS_DIR / "anytime.csv"
    rows = {tuple(r[k] for k in KEY): annotate(r, optima) for r in read_rows(csv_path)}
    tasks = [Task(f"{n} {s} {o}", run_one,
                  (n, s, o, args.time_limit, args.solver, args.threads, args.seed),
                  args.time_limit + 300.0,
                  lambda status, elapsed, n=n, s=s, o=o: dict(
                      network=n, buffer=s, objective=o, status=status, runtime_s=elapsed,
                      time_limit_s=args.time_limit))
             for o in args.objectives for n in args.networks for s in args.sizes]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    def done(task: Task, row: Row, outcome: str) -> None:
        rows[tuple(row[k] for k in KEY)] = annotate(row, optima)
        print(f"{task.label}: {outcome} {row.get('status')} {_mbit(row.get('objective_value'))}"
              f" (named {_mbit(row.get('best_named_value'))}, optimum "
              f"{_mbit(row.get('known_optimum'))}, gap {_pct(row.get('gap'))})", flush=True)
        ordered = sorted(rows.values(), key=_order)
        write_csv(csv_path, ordered, COLUMNS)
        write_text(RESULTS_DIR / "anytime.md", render_md(ordered, args.note))

    run_tasks(tasks, 1, done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
