"""Time the exact loop-nest table of a network: every step shape the joint
optimiser can choose, each solved once by :func:`stems_opt.cost.loops.solve_nests`.

A step shape is fixed by a layer, the input window of one sub-tile's output
rows, the time batch ``Tb`` and the weight chunks. The search space
(:func:`stems_opt.formulation.data.frame_specs`: every interval of layers,
axis and tile count; every ``Tb``) gives each layer's tile bounds, and every
sub-tile count ``m`` up to :func:`stems_opt.cost.geometry.sub_tile_limits`
splits them; every divisor of ``T`` and every weight choice of the layer
(``_weight_choices``) is crossed with them. Frames that differ only in order
or ``Tb`` share their bounds, so bounds are collected once per interval,
axis and tile count.

Usage: ``python benchmarks/nest_table.py instances/sew_resnet18_1mb.yaml [...]``.
Writes ``benchmarks/results/nest_table.csv`` and ``.md``: per instance the
number of distinct step shapes, the time to list them, and the wall and CPU
time of the whole exact table from an empty table.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import os
import platform
import sys
import time
from pathlib import Path

from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.geometry import sub_bounds, tile_bounds
from stems_opt.cost.loops import (
    NestHardware,
    StepShape,
    clear_nest_table,
    floor_chunk_counts,
    solve_nests,
    step_shape,
)
from stems_opt.formulation.data import _weight_choices, frame_axes
from stems_opt.io import load_instance
from stems_opt.network import Axis, divisors

RESULTS = Path(__file__).parent / "results"


def step_shapes(path: str, floor_only: bool = False) -> tuple[NestHardware, set[StepShape]]:
    """The instance's nest hardware and every step shape of its search space
    (``floor_only``: those the frame bounds solve, with the chunk counts of
    :func:`~stems_opt.cost.loops.floor_chunk_counts` only)."""
    problem = load_instance(path, objective="energy")
    net = problem.network
    k_u = problem.hardware.array.factor("K")
    L = len(net.layers)
    max_len = problem.max_segment_layers or L
    seen: set[tuple[str, Axis, tuple[int, ...]]] = set()
    ranges: dict[tuple[str, Axis], set[tuple[int, int]]] = {}
    for axis in frame_axes(net):
        for first in range(L):
            for last in range(first, min(L, first + max_len)):
                lays = net.layers[first:last + 1]
                names = [lay.name for lay in lays]
                for n in range(1, min(lay.extent(axis) for lay in lays) + 1):
                    bounds = tile_bounds(net, names, axis, n)
                    for lay in lays:
                        key = (lay.name, axis, bounds[lay.name])
                        if not lay.has_weights or key in seen:
                            continue
                        seen.add(key)
                        _add_ranges(ranges.setdefault((lay.name, axis), set()), key[2])
    shapes = set()
    tbs = divisors(net.timesteps)
    for (name, axis), spans in ranges.items():
        lay = net.layer(name)
        chunks = sorted({1} | {wc.chunks for wc in _weight_choices(lay, k_u)})
        if floor_only:
            chunks = [c for c in chunks if c in floor_chunk_counts(lay.k, k_u)]
        for lo, hi in spans:
            for tb in tbs:
                for ch in chunks:
                    shapes.add(step_shape(lay, axis, lo, hi, tb, ch))
    return nest_hardware(problem.hardware), shapes


def _add_ranges(out: set[tuple[int, int]], bounds: tuple[int, ...]) -> None:
    """Every sub-tile row range of tiles ``bounds`` split ``m`` ways, ``m`` up to
    the smallest non-empty tile (the sub-tile limit)."""
    tiles = [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    limit = min(hi - lo for lo, hi in tiles)
    for lo, hi in tiles:
        for m in range(1, limit + 1):
            sb = sub_bounds(lo, hi, m)
            out.update((a, z) for a, z in itertools.pairwise(sb) if z > a)


def _time_table(nh: NestHardware, shapes: set[StepShape], nests: bool) -> tuple[float, float]:
    """Wall and CPU seconds of the exact nests (``nests``; else their least
    energies alone) of ``shapes`` from an empty table."""
    t1, c1 = time.perf_counter(), time.process_time()
    clear_nest_table()
    solve_nests(sorted(shapes, key=repr), nh, nests=nests)
    return round(time.perf_counter() - t1, 2), round(time.process_time() - c1, 2)


def main(paths: list[str]) -> None:
    load_before = os.getloadavg()[0]
    rows = []
    for path in paths:
        t0 = time.perf_counter()
        nh, shapes = step_shapes(path)
        t1 = time.perf_counter()
        wall, cpu = _time_table(nh, shapes, nests=True)
        _, floor = step_shapes(path, floor_only=True)
        f_wall, f_cpu = _time_table(nh, floor, nests=False)
        rows.append({"instance": Path(path).stem, "step_shapes": len(shapes),
                     "enumerate_s": round(t1 - t0, 2), "solve_wall_s": wall,
                     "solve_cpu_s": cpu, "floor_shapes": len(floor),
                     "floor_wall_s": f_wall, "floor_cpu_s": f_cpu})
        print(rows[-1], flush=True)
    machine = (f"{os.cpu_count()} CPUs, {platform.node()}, "
               f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
               f"{load_before:.2f} before the run and {os.getloadavg()[0]:.2f} after it")
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "nest_table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(RESULTS / "nest_table.md", "w") as f:
        f.write("| instance | step shapes | list them (s) | exact nests, wall (s) "
                "| exact nests, CPU (s) | frame-bound shapes | their least energies, wall (s) "
                "| their least energies, CPU (s) |\n|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['instance']} | {r['step_shapes']} | {r['enumerate_s']} "
                    f"| {r['solve_wall_s']} | {r['solve_cpu_s']} | {r['floor_shapes']} "
                    f"| {r['floor_wall_s']} | {r['floor_cpu_s']} |\n")
        f.write("\nEvery step shape of the joint optimiser's search space (every interval, "
                "axis, tile count, sub-tile count, time batch and weight chunking), the "
                "instance's array and inner buffers, each exact nest solved once "
                "(`solve_nests`, empty table); the frame-bound shapes are those the frame "
                "bounds solve (chunk counts of `floor_chunk_counts` only), their least "
                "energies alone (the floors need no nest). Target: the whole table, "
                "listed and solved, of SEW-ResNet-18 under 5 s and of SEW-ResNet-152 "
                "under 30 s. One run, one process; the CPU time is this process's own, "
                f"the wall time also counts other work on the machine: {machine}.\n")


if __name__ == "__main__":
    main(sys.argv[1:])
