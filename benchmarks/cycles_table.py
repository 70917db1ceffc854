"""Time the exact least-cycles nest (``stems_opt.cost.cycles``) per step on
hardware with on-chip port widths, and one network-level latency solve.

The instance's accelerator gets port widths on the GB and on every inner
buffer (``--ports GB W I`` bits per cycle), narrow enough that the
least-energy nest of many steps stalls, so the floor shortcut does not
apply and the search runs. A fixed random sample of the network's step
shapes (those of ``benchmarks/nest_table.py``) is solved from an empty table,
each timed alone. ``--solve`` adds a latency solve of a small network on the
same ported accelerator (every step's least-cycles nest tabulated inside it).

Usage: ``python benchmarks/cycles_table.py instances/sew_resnet18_1mb.yaml
--sample 40 --solve instances/tiny_chain.yaml``. Writes
``benchmarks/results/cycles_table.md`` (and ``.csv``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nest_table import step_shapes

from stems_opt.cost.cycles import clear_cycles_table, cycles_floor, fewest_cycles_nest
from stems_opt.cost.loops import NestHardware, clear_nest_table, optimal_nest

RESULTS = Path(__file__).resolve().parent / "results"


def ported(nh: NestHardware, gb: float, w: float, i: float) -> NestHardware:
    """``nh`` with port widths on the GB and both inner buffers."""
    def buf(b, bw):
        return None if b is None else dataclasses.replace(b, bandwidth_bits_per_cycle=bw)
    return dataclasses.replace(nh, gb_bandwidth_bits_per_cycle=gb,
                               weight_buffer=buf(nh.weight_buffer, w),
                               input_buffer=buf(nh.input_buffer, i))


def time_steps(path: str, ports: tuple[float, float, float], sample: int
               ) -> list[dict[str, object]]:
    """Per sampled step: its wall and CPU time, whether the search ran."""
    nh, shapes = step_shapes(path)
    hw = ported(nh, *ports)
    chosen = random.Random(0).sample(sorted(shapes, key=repr), min(sample, len(shapes)))
    rows = []
    for shape in chosen:
        clear_cycles_table()
        clear_nest_table()
        t0, c0 = time.perf_counter(), time.process_time()
        _, cost = fewest_cycles_nest(shape, hw)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        searched = cost.cycles > cycles_floor(shape, hw) or \
            cost.cycles != _least_energy_cycles(shape, hw)
        rows.append({"step": repr(shape), "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
                     "cycles": cost.cycles, "compute_cycles": cost.compute_cycles,
                     "searched": searched})
    return rows


def _least_energy_cycles(shape, hw: NestHardware) -> int:
    from stems_opt.cost.loops import nest_cost
    return nest_cost(optimal_nest(shape, hw)[0], shape, hw).cycles


def time_solve(path: str, ports: tuple[float, float, float], limit_s: float) -> dict[str, object]:
    """One latency solve of ``path`` on its accelerator with ports, from empty tables."""
    from stems_opt.cost.energy import nest_hardware
    from stems_opt.io import load_instance
    from stems_opt.solvers import solve
    from stems_opt.stopping import Stop

    problem = load_instance(path, objective="latency")
    hw = problem.hardware
    gb = dataclasses.replace(hw.global_buffer, bandwidth_bits_per_cycle=ports[0])
    levels = tuple(dataclasses.replace(lv, bandwidth_bits_per_cycle=ports[1 if "W" in
                                                                            lv.operands else 2])
                   for lv in hw.inner_levels)
    hw = dataclasses.replace(hw, global_buffer=gb, inner_levels=levels, loop_nests=True)
    problem = dataclasses.replace(problem, hardware=hw)
    assert nest_hardware(hw).gb_bandwidth_bits_per_cycle == ports[0]
    clear_cycles_table()
    clear_nest_table()
    t0, c0 = time.perf_counter(), time.process_time()
    r = solve(problem, time_limit_s=limit_s, stop=Stop(limit_s))
    return {"instance": Path(path).stem, "status": r.status.value,
            "latency_cycles": r.objective_value, "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(time.process_time() - c0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("instance")
    ap.add_argument("--ports", nargs=3, type=float, default=(64.0, 16.0, 16.0))
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--solve", nargs="*", default=[])
    ap.add_argument("--limit", type=float, default=600.0)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    ports = tuple(args.ports)
    rows = time_steps(args.instance, ports, args.sample)  # type: ignore[arg-type]
    searched = [r for r in rows if r["searched"]]
    walls = [float(r["wall_s"]) for r in searched] or [0.0]
    cpus = [float(r["cpu_s"]) for r in searched] or [0.0]
    summary = {"label": args.label, "instance": Path(args.instance).stem,
               "ports_gb_w_i": " ".join(f"{p:g}" for p in ports), "steps": len(rows),
               "searched": len(searched), "median_cpu_s": round(statistics.median(cpus), 4),
               "max_cpu_s": round(max(cpus), 4), "mean_wall_s": round(statistics.mean(walls), 4),
               "all_steps_cpu_s": round(sum(float(r["cpu_s"]) for r in rows), 2)}
    print(summary, flush=True)
    solves = [time_solve(p, ports, args.limit) for p in args.solve]  # type: ignore[arg-type]
    for s in solves:
        print(s, flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "cycles_table.csv", "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary))
        if f.tell() == 0:
            w.writeheader()
        w.writerow(summary)


if __name__ == "__main__":
    main()
