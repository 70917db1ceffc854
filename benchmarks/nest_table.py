"""Time the exact loop-nest table of a network: every step shape the joint
model can choose (each frame's tile bounds, sub-tile count, time batch and
weight chunking), each solved once by :func:`stems_opt.cost.loops.optimal_nest`.

Usage: ``python benchmarks/nest_table.py instances/sew_resnet18_1mb.yaml [...]``.
Writes ``benchmarks/results/nest_table.csv`` and ``.md``.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from stems_opt.cost.loops import layer_steps, optimal_nest
from stems_opt.cost_model import nest_hardware, sub_tile_limits, tile_bounds
from stems_opt.formulation.data import frame_specs
from stems_opt.io import load_instance
from stems_opt.mapping import Segment
from stems_opt.network import divisors

RESULTS = Path(__file__).parent / "results"


def step_shapes(path: str) -> tuple[object, set]:
    """The instance's nest hardware and every distinct step shape of its search space."""
    problem = load_instance(path)
    net, hw = problem.network, problem.hardware
    ku = hw.array.factor("K")
    shapes = set()
    seen = set()
    for first, last, tb, axis, n, _ in frame_specs(problem):
        names = tuple(lay.name for lay in net.layers[first:last + 1])
        bounds = tile_bounds(net, names, axis, n)
        limits = sub_tile_limits(net, Segment(names, tb, n, axis))
        for name in names:
            lay = net.layer(name)
            if not lay.has_weights:
                continue
            key = (name, bounds[name], tb, axis)
            if key in seen:
                continue
            seen.add(key)
            chunk_opts = [k for k in divisors(lay.k) if k == 1 or lay.k // k >= ku]
            for m in range(1, limits[name] + 1):
                for chunks in chunk_opts:
                    shapes.update(layer_steps(lay, axis, bounds[name], m, tb, chunks))
    return nest_hardware(hw), shapes


def main(paths: list[str]) -> None:
    rows = []
    for path in paths:
        t0 = time.perf_counter()
        nh, shapes = step_shapes(path)
        t1 = time.perf_counter()
        optimal_nest.cache_clear()
        for shape in shapes:
            optimal_nest(shape, nh)
        t2 = time.perf_counter()
        rows.append({"instance": Path(path).stem, "step_shapes": len(shapes),
                     "enumerate_s": round(t1 - t0, 2), "solve_s": round(t2 - t1, 2)})
        print(rows[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "nest_table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(RESULTS / "nest_table.md", "w") as f:
        f.write("| instance | step shapes | enumerate (s) | exact nests (s) |\n|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['instance']} | {r['step_shapes']} | {r['enumerate_s']} "
                    f"| {r['solve_s']} |\n")


if __name__ == "__main__":
    main(sys.argv[1:])
