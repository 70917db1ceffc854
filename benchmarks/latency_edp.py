"""Latency and EDP benchmark: the optimum (or the gap) of every chosen instance.

For each instance and each of the objectives ``latency`` and ``edp``, one
``solve`` with a wall-clock limit (default 60 s): status, value, proven
bound, gap, wall time, and for EDP the weighted solves and the supported
(energy, latency) points found (``docs/solver.md``). The latency of the
energy optimum is listed beside it, to show what optimising latency buys.

Results: ``benchmarks/results/latency_edp.{csv,md}``.

Examples
--------
::

    python benchmarks/latency_edp.py
    python benchmarks/latency_edp.py --limit 20 --instances tiny_chain red_lif_1mb
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = ("tiny_chain", "tiny_residual", "tiny_linear", "tiny_reset", "tiny_ann_snn",
           "red_lif_1mb", "sew_resnet18_1mb")
COLUMNS = ("instance", "objective", "status", "value", "bound", "gap", "wall_s",
           "latency_cycles", "energy_pj", "energy_optimum_latency_cycles", "weighted_solves",
           "points")


def run(instance: str, objective: str, limit_s: float,
        energy_latency: dict[str, int | str]) -> dict[str, object]:
    """Solve one instance for ``objective`` within ``limit_s``; the row of the table."""
    from stems_opt import Objective, load_instance
    from stems_opt.solvers import solve
    from stems_opt.stopping import Stop

    problem = load_instance(ROOT / "instances" / f"{instance}.yaml", objective)
    t0 = time.perf_counter()
    r = solve(problem, time_limit_s=limit_s, stop=Stop(limit_s))
    wall = time.perf_counter() - t0
    if instance not in energy_latency:
        e = solve(problem.with_objective(Objective.ENERGY), time_limit_s=limit_s,
                  stop=Stop(limit_s))
        energy_latency[instance] = e.cost.latency_cycles if e.cost is not None else ""
    return {"instance": instance, "objective": objective, "status": r.status.value,
            "value": r.objective_value, "bound": r.bound, "gap": r.gap,
            "wall_s": round(wall, 2),
            "latency_cycles": r.cost.latency_cycles if r.cost else "",
            "energy_pj": round(r.cost.total_energy_pj, 3) if r.cost else "",
            "energy_optimum_latency_cycles": energy_latency[instance],
            "weighted_solves": r.stats.get("weighted_solves", ""),
            "points": r.stats.get("points", "")}


def _number(text: str) -> object:
    """A CSV cell as the int or float it was written from (else the text)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


def merged(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """``rows`` with the earlier CSV's rows of the instances not re-run, in
    the default order (a partial re-run keeps the rest of the table)."""
    path = RESULTS / "latency_edp.csv"
    ran = {r["instance"] for r in rows}
    old: list[dict[str, object]] = []
    if path.exists():
        with open(path, newline="") as f:
            old = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)
                   if r["instance"] not in ran]
    order = {name: i for i, name in enumerate(DEFAULT)}
    return sorted(old + rows, key=lambda r: order.get(str(r["instance"]), len(order)))


def write(rows: list[dict[str, object]], limit_s: float, load: str) -> None:
    """The CSV and the markdown table."""
    RESULTS.mkdir(exist_ok=True)
    rows = merged(rows)
    with open(RESULTS / "latency_edp.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    shown = [c for c in COLUMNS if c != "points"]
    lines = ["# Latency and EDP optima", "",
             f"`python benchmarks/latency_edp.py` on {platform.processor() or platform.machine()}"
             f", {os.cpu_count()} cores (load average {load} when the last rows ran: "
             "above 2, other work shared the cores and the times are longer), limit "
             f"{limit_s:g} s per solve (EDP: all its weighted solves together). Latency in "
             "cycles, energy in pJ, EDP in pJ x cycles; `energy_optimum_latency_cycles` is "
             "the latency of the energy optimum.", "",
             "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in shown) + " |" for r in rows]
    lines += ["", "(energy, latency) of the mappings the EDP searches' weighted solves returned "
              "(not all on the Pareto front: a weighted solve returns one of its optima, e.g. "
              "any least-latency mapping):", ""]
    lines += [f"- {r['instance']}: {r['points']}" for r in rows if r["objective"] == "edp"]
    (RESULTS / "latency_edp.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", nargs="*", default=list(DEFAULT))
    ap.add_argument("--limit", type=float, default=60.0, help="seconds per solve")
    args = ap.parse_args()
    rows: list[dict[str, object]] = []
    energy_latency: dict[str, int | str] = {}
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    for inst in args.instances:
        for objective in ("latency", "edp"):
            rows.append(run(inst, objective, args.limit, energy_latency))
            print(rows[-1], flush=True)
    write(rows, args.limit, load)


if __name__ == "__main__":
    main()
