"""Deep-chain benchmark: how time to a first mapping and memory grow with depth.

A chain of ``N`` LIF 3x3 convolutions (64 channels, 32x32 maps, T = 4, in
blocks of two) on the 1 MB edge accelerator is solved once per depth under a
time limit (traffic objective), each run in a fresh subprocess, the way
``stems-opt solve --time-limit`` runs (named schedules scored in a second
process as the fallback). Recorded per depth: the time the search took to
build its model, the time to its first mapping (``on_incumbent``), the wall
time to the answer, the value, bound and gap, and the peak resident memory
(the larger of the solving process and the named schedules' process).

Results: ``benchmarks/results/deep_chain.{csv,md}``.

Examples
--------
::

    python benchmarks/deep_chain.py                          # N = 100, 200, 500, 1000
    python benchmarks/deep_chain.py --depths 200 --time-limit 30
    python benchmarks/deep_chain.py --write 1000 chain1000.yaml   # the network file only
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
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
HARDWARE = ROOT / "models" / "hardware" / "edge_1mb.yaml"
COLUMNS = ("layers", "time_limit_s", "build_s", "open_len", "columns", "first_mapping_s",
           "wall_s", "status", "objective_value", "bound", "gap", "mapping_from", "peak_rss_mb")
CHANNELS = 64
SIDE = 32
TIMESTEPS = 4


def chain_network(layers: int) -> dict[str, Any]:
    """The network document of an ``layers``-deep chain of LIF 3x3 convs."""
    names = [f"c{i}" for i in range(layers)]
    doc: dict[str, Any] = {
        "name": f"chain{layers}",
        "comment": f"benchmark: {layers} LIF 3x3 convs in a chain, {CHANNELS} channels, "
                   f"{SIDE}x{SIDE} maps, T={TIMESTEPS}",
        "timesteps": TIMESTEPS,
        "state_persistence": "streaming",
        "defaults": {"weight_bits": 4, "spike_bits": 1, "state_bits": 12, "neuron": "lif"},
        "input": {"name": "input", "channels": CHANNELS, "height": SIDE, "width": SIDE,
                  "bits": 1},
        "layers": [{"name": name, "type": "conv", "inputs": [names[i - 1] if i else "input"],
                    "loop_dims": {"K": CHANNELS, "C": CHANNELS, "FY": 3, "FX": 3,
                                  "OY": SIDE, "OX": SIDE}, "padding": "same"}
                   for i, name in enumerate(names)],
        "blocks": [{"name": f"b{i // 2}", "layers": names[i:i + 2]}
                   for i in range(0, layers, 2)],
        "outputs": [names[-1]],
    }
    return doc


def chain_problem(layers: int) -> Any:
    """The traffic problem of the chain on the 1 MB edge accelerator."""
    from stems_opt.io import load_hardware, network_from_dict
    from stems_opt.problem import Objective, Problem

    net = network_from_dict(chain_network(layers), f"<chain{layers}>")
    return Problem(net, load_hardware(HARDWARE), Objective.TRAFFIC, f"chain{layers}")


def run_one(layers: int, time_limit_s: float) -> dict[str, Any]:
    """Solve one depth in this process; its row."""
    import resource

    from stems_opt.solvers import solve
    from stems_opt.stopping import Stop

    problem = chain_problem(layers)
    first: list[float] = []
    t0 = time.perf_counter()
    result = solve(problem, time_limit_s=time_limit_s, stop=Stop(time_limit_s),
                   on_incumbent=lambda s, _v: first or first.append(s))
    wall = time.perf_counter() - t0
    if not first and result.mapping is not None:
        first.append(wall)  # the fallback, taken at the end
    return {"layers": layers, "time_limit_s": time_limit_s,
            "build_s": result.stats.get("model_build_s"),
            "open_len": result.stats.get("open_len"), "columns": result.stats.get("columns"),
            "first_mapping_s": first[0] if first else None, "wall_s": wall,
            "status": result.status.value, "objective_value": result.objective_value,
            "bound": result.bound, "gap": result.gap,
            "mapping_from": result.stats.get("incumbent", "search") if result.mapping else "-",
            "peak_rss_mb": max(resource.getrusage(who).ru_maxrss for who in (
                resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024}


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or v == "" else format(float(v), spec)


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# Deep chains", "",
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; `python benchmarks/deep_chain.py`. "
             "Chains of LIF 3x3 convs (64 channels, 32x32, T = 4) on the 1 MB edge "
             "accelerator, traffic objective. Times in seconds from the call; "
             "peak memory is the larger of the solving process and the named "
             "schedules' process. The machine may be shared with other work: times "
             "are upper bounds.", "",
             "| layers | limit | build | intervals opened | columns | first mapping | wall | "
             "status | value (Mbit) | bound (Mbit) | gap | mapping from | peak RSS (MB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|"]
    for r in rows:
        value = None if r.get("objective_value") in (None, "") else float(
            r["objective_value"]) / 1e6
        bound = None if r.get("bound") in (None, "") else float(r["bound"]) / 1e6
        gap = "-" if r.get("gap") in (None, "") else f"{100 * float(r['gap']):.1f} %"
        lines.append(f"| {r['layers']} | {_fmt(r['time_limit_s'], 'g')} | "
                     f"{_fmt(r.get('build_s'), '.1f')} | up to {r.get('open_len') or '-'} | "
                     f"{r.get('columns') or '-'} | {_fmt(r.get('first_mapping_s'), '.1f')} | "
                     f"{_fmt(r.get('wall_s'), '.1f')} | {r.get('status', '-')} | "
                     f"{_fmt(value, '.2f')} | {_fmt(bound, '.2f')} | {gap} | "
                     f"{r.get('mapping_from', '-')} | {_fmt(r.get('peak_rss_mb'), '.0f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", nargs="*", type=int, default=[100, 200, 500, 1000])
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--write", nargs=2, metavar=("LAYERS", "FILE"),
                    help="write the network file of a LAYERS-deep chain and stop")
    ap.add_argument("--one", nargs=2, metavar=("LAYERS", "LIMIT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write:
        Path(args.write[1]).write_text(yaml.safe_dump(chain_network(int(args.write[0])),
                                                      sort_keys=False))
        return 0
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), float(args.one[1]))))
        return 0
    rows = []
    for layers in args.depths:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(layers), str(args.time_limit)],
                capture_output=True, text=True, check=False,
                timeout=5 * args.time_limit + 60, env={**os.environ, "PYTHONPATH": str(ROOT)})
            row = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 \
                else {"layers": layers, "time_limit_s": args.time_limit, "status": "error"}
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
        except subprocess.TimeoutExpired:
            row = {"layers": layers, "time_limit_s": args.time_limit, "status": "no answer",
                   "wall_s": time.perf_counter() - t0}
        rows.append(row)
        print(f"{layers:>5} layers: {row.get('status')}, first mapping "
              f"{_fmt(row.get('first_mapping_s'), '.1f')} s, wall {_fmt(row.get('wall_s'), '.1f')}"
              f" s, peak {_fmt(row.get('peak_rss_mb'), '.0f')} MB", flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "deep_chain.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (RESULTS / "deep_chain.md").write_text(_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
