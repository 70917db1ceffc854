"""Frames shared across the points of a buffer sweep (``formulation/frame_store.py``).

Solves one network at every buffer size, largest first as ``stems-opt sweep``
does, in one process: once sharing (one network object, as
:func:`~stems_opt.formulation.frame_store.shared_network` gives a sweep, and
the frame store kept from point to point), once not (the network loaded
afresh and the store cleared before each point, as a sweep did before).
Per point: frames the search used and how many it built (the rest came from
the store), the time to build the columns and bounds before the search
(``model_build_s``), the solve time, and whether the two runs agree on the
status and value (and the mapping: among equal optima the one returned may
depend on timing, e.g. when the named schedules arrive).

Writes ``benchmarks/results/frame_sharing.md``.

Example
-------
::

    python benchmarks/frame_sharing.py --network sew_resnet18_5plif --objectives traffic energy
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("2mb", "1mb", "512kb", "384kb", "256kb", "128kb")


def run(network: str, objective: str, keep: bool, time_limit_s: float) -> list[dict]:
    from stems_opt.formulation.frame_store import clear_frame_store
    from stems_opt.io import load_hardware, load_instance
    from stems_opt.problem import Objective, Problem
    from stems_opt.solvers import solve

    base = load_instance(ROOT / "instances" / f"{network}_1mb.yaml")
    clear_frame_store()
    rows = []
    for size in SIZES:
        if not keep:
            clear_frame_store()
            base = load_instance(ROOT / "instances" / f"{network}_1mb.yaml")
        hw = load_hardware(ROOT / "models" / "hardware" / f"edge_{size}.yaml")
        p = Problem(base.network, hw, Objective(objective), f"{network}_{size}", (),
                    base.max_segment_layers)
        start = time.perf_counter()
        r = solve(p, time_limit_s=time_limit_s, threads=2)
        rows.append(dict(size=size, status=r.status.value, value=r.objective_value,
                         mapping=r.mapping, solve_s=time.perf_counter() - start,
                         frames=r.stats.get("frames_built", 0),
                         shared=r.stats.get("frames_shared", 0),
                         build_s=r.stats.get("model_build_s", 0.0)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="sew_resnet18_5plif")
    ap.add_argument("--objectives", nargs="+", default=["traffic", "energy"])
    ap.add_argument("--time-limit", type=float, default=60.0)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    lines = [f"# Frames shared across a buffer sweep ({args.network})", "",
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, 2 cores shared with other "
             f"work (load average {load:.0f} at the start): times are upper bounds. Sizes "
             f"largest first in one process, {args.time_limit:.0f} s per point; shared: one "
             "network object and the frame store kept; not: network reloaded and store "
             "cleared before each point.", "",
             "| objective | buffer | frames used | frames built (shared) | frames built (not) "
             "| columns built s (shared) | (not) | solve s (shared) | (not) "
             "| same status, value | same mapping |", "|---" * 11 + "|"]
    for objective in args.objectives:
        kept = run(args.network, objective, True, args.time_limit)
        cold = run(args.network, objective, False, args.time_limit)
        for a, b in zip(kept, cold, strict=True):
            same = a["status"] == b["status"] and a["value"] == b["value"]
            same_map = a["mapping"] == b["mapping"]
            lines.append(
                f"| {objective} | {a['size']} | {a['frames']} | {a['frames'] - a['shared']} "
                f"| {b['frames'] - b['shared']} | {a['build_s']:.1f} | {b['build_s']:.1f} "
                f"| {a['solve_s']:.1f} | {b['solve_s']:.1f} | {'yes' if same else 'NO'} "
                f"| {'yes' if same_map else 'no'} |")
        tot = [sum(r[k] for r in rows) for rows in (kept, cold) for k in ("build_s", "solve_s")]
        lines.append(f"| {objective} | total | | | | {tot[0]:.1f} | {tot[2]:.1f} | {tot[1]:.1f} "
                     f"| {tot[3]:.1f} | | |")
    out = ROOT / "benchmarks" / "results" / "frame_sharing.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
