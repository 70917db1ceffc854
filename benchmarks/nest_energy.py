"""Time the joint energy optimum with loop nests on the reference accelerator.

The edge hardware files set ``loop_nests`` (``docs/model.md`` 6); this
script loads each instance, turns ``loop_nests`` on in its hardware anyway (in
memory: no file is written; an instance on other hardware gets nests too) and
solves ``--objective energy`` with the columns method (CP-SAT), by default
with no time limit (so no second process for the named schedules),
recording the status, the value, the bound, the gap, the wall and CPU time.

Usage: ``python benchmarks/nest_energy.py [--time-limit S] instances/sew_resnet18_1mb.yaml [...]``.
Writes ``benchmarks/results/nest_energy.csv`` and ``.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
import time
from pathlib import Path

from stems_opt.io import load_instance
from stems_opt.solvers import solve_columns

RESULTS = Path(__file__).parent / "results"


def run(path: str, time_limit_s: float | None = None) -> dict[str, object]:
    """Solve one instance's energy optimum with loop nests on (within
    ``time_limit_s`` seconds, if given)."""
    problem = load_instance(path, objective="energy")
    problem = dataclasses.replace(
        problem, hardware=dataclasses.replace(problem.hardware, loop_nests=True))
    t0, c0 = time.perf_counter(), time.process_time()
    result = solve_columns(problem, "cpsat", time_limit_s=time_limit_s)
    return {"instance": Path(path).stem, "status": result.status.value,
            "energy_uj": round(result.objective_value / 1e6, 3),
            "bound_uj": round(result.bound / 1e6, 3),
            "gap_pct": round(100 * (result.objective_value - result.bound)
                             / result.objective_value, 3),
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1)}


def main(args: list[str]) -> None:
    limit = None
    if args[:1] == ["--time-limit"]:
        limit, args = float(args[1]), args[2:]
    rows = []
    for path in args:
        rows.append(run(path, limit))
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "nest_energy.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(RESULTS / "nest_energy.md", "w") as f:
        f.write("| instance | status | energy (uJ) | bound (uJ) | gap (%) | wall (s) "
                "| CPU (s) |\n|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['instance']} | {r['status']} | {r['energy_uj']:,} "
                    f"| {r['bound_uj']:,} | {r['gap_pct']} | {r['wall_s']} | {r['cpu_s']} |\n")
        limit_text = "no time limit" if limit is None else f"{limit:g} s time limit"
        f.write(f"\n`--objective energy` with `loop_nests: true` (columns, CP-SAT, {limit_text}"
                "). One run on 2 cores shared with other jobs: the wall times are "
                "inflated by the contention, the CPU time is this process's own.\n")


if __name__ == "__main__":
    main(sys.argv[1:])
