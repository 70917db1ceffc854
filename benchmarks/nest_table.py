"""Time the exact loop nests of a network's steps: every step shape of the
named schedules' mappings (their tile bounds, sub-tile counts, time batches
and weight chunks), each solved once by :func:`stems_opt.cost.loops.optimal_nest`.

Usage: ``python benchmarks/nest_table.py instances/sew_resnet18_1mb.yaml [...]``.
Writes ``benchmarks/results/nest_table.csv`` and ``.md``. The named schedules
are built under the traffic objective (they need no nest), so only the
nests are timed.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.geometry import SegmentGeometry, weight_chunks
from stems_opt.cost.loops import layer_steps, optimal_nest
from stems_opt.heuristics import named_schedule
from stems_opt.io import load_instance

RESULTS = Path(__file__).parent / "results"
SCHEDULES = ("ST-LBL", "TB-LBL", "TB-F", "ST-F")


def step_shapes(path: str) -> tuple[object, set]:
    """The instance's nest hardware and the distinct step shapes of its named schedules."""
    problem = load_instance(path, objective="traffic")
    net = problem.network
    shapes = set()
    for name in SCHEDULES:
        mapping = named_schedule(problem, name).mapping
        if mapping is None:
            continue
        for seg in mapping.segments:
            geo = SegmentGeometry(net, seg)
            for lay in geo.layers:
                if lay.has_weights:
                    shapes.update(layer_steps(lay, seg.axis, geo.bounds[lay.name],
                                              seg.sub_tile(lay.name), geo.tb,
                                              weight_chunks(seg, lay)))
    return nest_hardware(problem.hardware), shapes


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
