"""Anytime benchmark: what ``--time-limit 10`` returns on the ski-slope points.

For every network x global-buffer size (the table of ``benchmarks/skislope.py``)
one fresh subprocess solves the point under a short wall-clock limit (default
10 s, as ``stems-opt solve --time-limit 10``: the named schedules are scored
meanwhile in a second process and seed the search) and reports the mapping's
value, the best named schedule (TB-LBL, TB-F, ST-F; scored before the solve,
not counted in its time), whether the mapping is strictly better, the bound
and gap, and when the search first beat the best named schedule. The known
optimum of each point comes from ``benchmarks/results/study_skislope.csv``
where that study proved it (traffic); the target is a mapping strictly better
than the best named schedule wherever the optimum is, and a gap under 5 %.

Results: ``benchmarks/results/anytime.{csv,md}``.

Examples
--------
::

    python benchmarks/anytime.py
    python benchmarks/anytime.py --networks red_lif --sizes 128kb 512kb --time-limit 10
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from skislope import NETWORKS, SIZES, run_one
from solve_time import Task, as_float, run_tasks, write_csv, write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
STUDY = RESULTS_DIR / "study_skislope.csv"
KIB_BITS = 8 * 1024
COLUMNS = ("network", "buffer", "objective", "time_limit_s", "status", "objective_value",
           "best_named", "best_named_value", "strictly_better", "known_optimum",
           "above_optimum", "bound", "gap", "first_beat_named_s", "runtime_s",
           "peak_memory_mb")
Row = dict[str, Any]


def known_optima(path: Path = STUDY) -> dict[tuple[str, str, str], float]:
    """Proven optima of the study, keyed by (network, buffer, objective)."""
    out: dict[tuple[str, str, str], float] = {}
    if not path.exists():
        return out
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("status") != "optimal":
                continue
            kb = int(r["gb_capacity_bits"]) // KIB_BITS
            buffer = f"{kb // 1024}mb" if kb % 1024 == 0 else f"{kb}kb"
            out[(r["network"], buffer, r["objective"])] = float(r["value"])
    return out


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


def render_md(rows: list[Row], note: str) -> str:
    """One line per point, and the two targets counted."""
    limit = rows[0]["time_limit_s"] if rows else "?"
    beat_needed = [r for r in rows if r.get("known_optimum") is not None and as_float(
        r.get("best_named_value")) is not None and r["known_optimum"] < r["best_named_value"]]
    beat = [r for r in beat_needed if r.get("strictly_better")]
    gap_ok = [r for r in rows if (g := as_float(r.get("gap"))) is not None and g < 0.05]
    out = ["# Anytime: what a short time limit returns", "",
           f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {note}; "
           f"`python benchmarks/anytime.py --time-limit {limit:g}`.", "",
           "Value, best named schedule and known optimum in Mbit (traffic) or the "
           "objective's unit; *above opt.*: how far the mapping is above the optimum "
           "proven by the study (`study_skislope.csv`); *first beat*: seconds into the "
           "search to the first mapping strictly better than the best named schedule.", "",
           f"- Strictly better than the best named schedule where the optimum is: "
           f"**{len(beat)} of {len(beat_needed)}** points.",
           f"- Gap under 5 %: **{len(gap_ok)} of {len(rows)}** points.", "",
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
    rows: list[Row] = []
    tasks = [Task(f"{n} {s} {o}", run_one,
                  (n, s, o, args.time_limit, args.solver, args.threads, args.seed),
                  args.time_limit + 300.0,
                  lambda status, elapsed, n=n, s=s, o=o: dict(
                      network=n, buffer=s, objective=o, status=status, runtime_s=elapsed,
                      time_limit_s=args.time_limit))
             for o in args.objectives for n in args.networks for s in args.sizes]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    def done(task: Task, row: Row, outcome: str) -> None:
        rows.append(annotate(row, optima))
        print(f"{task.label}: {outcome} {row.get('status')} {_mbit(row.get('objective_value'))}"
              f" (named {_mbit(row.get('best_named_value'))}, optimum "
              f"{_mbit(row.get('known_optimum'))}, gap {_pct(row.get('gap'))})", flush=True)
        write_csv(RESULTS_DIR / "anytime.csv", rows, COLUMNS)
        write_text(RESULTS_DIR / "anytime.md", render_md(rows, args.note))

    run_tasks(tasks, 1, done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
