"""Time-limit benchmark: does ``solve`` return within its wall-clock limit?

For every bundled instance, both objectives and limits of 1, 5 and 20 s, one
fresh subprocess loads the instance, then solves and formats the report as
``stems-opt solve`` does (with a :class:`~stems_opt.stopping.Stop`, so the
named fallback runs in its second process). The clock starts when the files
are read, as the documented limit does. The overrun is the wall time past
the limit; the target is under 10 % of the limit plus 0.5 s.

Results: ``benchmarks/results/time_limits.{csv,md}``.

Examples
--------
::

    python benchmarks/time_limits.py
    python benchmarks/time_limits.py --limits 1 --instances sew_resnet152_1mb
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("instance", "objective", "limit_s", "wall_s", "overrun_s", "within_target",
           "status", "objective_value", "bound", "gap", "incumbent_from", "stopped")


def run_one(instance: str, objective: str, limit_s: float) -> dict[str, object]:
    """Load, solve and format once, in this process; the row of the table."""
    from stems_opt import load_instance
    from stems_opt.report import format_result, result_to_dict
    from stems_opt.solvers import solve
    from stems_opt.stopping import Stop

    problem = load_instance(instance, objective)
    t0 = time.perf_counter()
    result = solve(problem, time_limit_s=limit_s, stop=Stop(limit_s))
    format_result(problem, result)
    result_to_dict(problem, result)
    wall = time.perf_counter() - t0
    overrun = wall - limit_s
    return {"instance": Path(instance).stem, "objective": objective, "limit_s": limit_s,
            "wall_s": round(wall, 3), "overrun_s": round(overrun, 3),
            "within_target": overrun <= 0.1 * limit_s + 0.5,
            "status": result.status.value, "objective_value": result.objective_value,
            "bound": result.bound, "gap": result.gap,
            "incumbent_from": result.stats.get("incumbent", "search"),
            "stopped": result.stats.get("stopped", "")}


def _markdown(rows: list[dict[str, object]]) -> str:
    worst = max((float(r["overrun_s"]) - 0.1 * float(r["limit_s"]) for r in rows), default=0)
    lines = ["# Time limits", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; `python benchmarks/time_limits.py`.",
             "Wall time from the files read to the formatted report; target: overrun under "
             "10 % of the limit + 0.5 s.", "",
             f"Every run within target: **{all(r['within_target'] for r in rows)}** "
             f"(worst overrun beyond 10 % of its limit: {worst:+.2f} s).", "",
             "| instance | objective | limit s | wall s | overrun s | status | gap | "
             "mapping from | stopped by |",
             "|---|---|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        gap = "-" if r["gap"] is None else f"{float(r['gap']):.2%}"
        lines.append(f"| {r['instance']} | {r['objective']} | {r['limit_s']:g} | "
                     f"{r['wall_s']:.2f} | {r['overrun_s']:+.2f} | {r['status']} | {gap} | "
                     f"{r['incumbent_from']} | {r['stopped'] or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", nargs="*", help="instance names (default: all bundled)")
    ap.add_argument("--objectives", nargs="*", default=["traffic", "energy"])
    ap.add_argument("--limits", nargs="*", type=float, default=[1.0, 5.0, 20.0])
    ap.add_argument("--one", nargs=3, metavar=("INSTANCE", "OBJECTIVE", "LIMIT"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], float(args.one[2]))))
        return 0
    paths = sorted((ROOT / "instances").glob("*.yaml"))
    if args.instances:
        paths = [p for p in paths if p.stem in args.instances]
    rows = []
    for path in paths:
        for objective in args.objectives:
            for limit in args.limits:
                proc = subprocess.run([sys.executable, __file__, "--one", str(path), objective,
                                       str(limit)], capture_output=True, text=True, check=False,
                                      env={**os.environ, "PYTHONPATH": str(ROOT)})
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{row['instance']:<24} {objective:<8} {limit:>5g} s: wall "
                      f"{row['wall_s']:.2f} s, overrun {row['overrun_s']:+.2f} s, "
                      f"{row['status']}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "time_limits.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (RESULTS / "time_limits.md").write_text(_markdown(rows))
    return 0 if all(r["within_target"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
