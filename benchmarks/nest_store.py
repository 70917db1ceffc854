"""Nest-store benchmark: energy under ``--time-limit 10`` cold, and with the nest
table kept between runs (``stems-opt solve --nest-cache DIR``).

Per network, three passes of ``stems-opt solve`` (one subprocess per run, as a
user runs it; energy objective, the reference accelerator at each global-buffer
size):

* ``cold``: every small size with ``--nest-cache off`` (nothing kept);
* ``sweep``: one fresh table directory, the sizes from 2 MB down to 128 KB in
  turn, as a buffer-size sweep runs them: each run starts from the nests the
  larger sizes' runs solved (the table does not depend on the buffer size);
* ``rerun``: the small sizes again with that directory (a second sweep, or a
  rerun with another limit).

Each row: the value, bound and gap the run printed, how far the value is above
the known optimum (``benchmarks/results/skislope.csv``), the wall time, and
the table's size after the run. Results: ``benchmarks/results/nest_store.{csv,md}``.

Examples
--------
::

    python benchmarks/nest_store.py
    python benchmarks/nest_store.py --networks red_lif --time-limit 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anytime import known_optima
from solve_time import as_float, read_rows, write_csv, write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
NETWORKS = ("red_lif", "sew_resnet152", "sew_resnet18")
SMALL = ("128kb", "256kb", "384kb", "512kb")
SWEEP = ("2mb", "1mb", "512kb", "384kb", "256kb", "128kb")
COLUMNS = ("network", "buffer", "pass", "status", "value_uj", "bound_uj", "gap",
           "above_optimum", "wall_s", "table_shapes", "table_mb")
Row = dict[str, Any]


def run_point(network: str, buffer: str, store: str, time_limit_s: float,
              threads: int) -> Row:
    """One ``stems-opt solve`` run; its JSON answer as a row."""
    import yaml

    inst = yaml.safe_load((ROOT / "instances" / f"{network}_1mb.yaml").read_text())
    cap = (inst.get("options") or {}).get("max_segment_layers")
    cmd = [sys.executable, "-m", "stems_opt", "solve", f"models/networks/{network}.yaml",
           "--hardware", f"models/hardware/edge_{buffer}.yaml", "--objective", "energy",
           "--time-limit", str(time_limit_s), "--threads", str(threads), "--json", "--quiet",
           "--nest-cache", store, *(["--max-segment-layers", str(cap)] if cap else [])]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - start
    doc = json.loads(out.stdout) if out.stdout.strip() else {}
    value, bound = as_float(doc.get("objective_value")), as_float(doc.get("bound"))
    return dict(network=network, buffer=buffer, status=doc.get("status", f"exit {out.returncode}"),
                value_uj=None if value is None else value / 1e6,
                bound_uj=None if bound is None else bound / 1e6,
                gap=doc.get("gap"), wall_s=wall)


def table_size(store: str) -> tuple[int, float]:
    """Shapes and megabytes in the table directory ``store``."""
    import numpy as np

    files = list(Path(store).glob("nests-*.npz")) if store != "off" else []
    shapes = sum(len(np.load(f)["energy_fj"]) for f in files)
    return shapes, sum(f.stat().st_size for f in files) / 1e6


def passes(network: str, time_limit_s: float, threads: int,
           optima: dict[tuple[str, str, str], float]) -> list[Row]:
    """The cold, sweep and rerun passes of one network."""
    rows: list[Row] = []

    def record(buffer: str, name: str, store: str) -> None:
        row = run_point(network, buffer, store, time_limit_s, threads)
        opt = optima.get((network, buffer, "energy"))
        row.update({"pass": name, "above_optimum": None if opt is None or row["value_uj"] is None
                    else row["value_uj"] * 1e6 / opt - 1})
        row["table_shapes"], row["table_mb"] = table_size(store)
        rows.append(row)
        print(f"{network} {buffer} {name}: {row['status']} gap {_pct(row['gap'])} "
              f"({row['wall_s']:.1f} s, table {row['table_shapes']:,} shapes)", flush=True)

    for buffer in SMALL:
        record(buffer, "cold", "off")
    with tempfile.TemporaryDirectory() as store:
        for buffer in SWEEP:
            record(buffer, "sweep", store)
        for buffer in SMALL:
            record(buffer, "rerun", store)
    return rows


def _pct(value: Any) -> str:
    v = as_float(value)
    return "-" if v is None else f"{100 * v:.1f} %"


def render_md(rows: list[Row], args: argparse.Namespace) -> str:
    """The gap of every small size per pass, and the table sizes."""
    lines = [f"# Energy under `--time-limit {args.time_limit:g}`: cold and with the nest table "
             "kept", "",
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
             f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end; "
             f"`--threads {args.threads}`. Generated by `benchmarks/nest_store.py`.", "",
             "Gap at the time limit (and how far the mapping is above the proven optimum). "
             "*cold*: `--nest-cache off`; *sweep*: one table directory, the sizes from 2 MB "
             "down, each at the limit; *rerun*: the small sizes again with that table.", "",
             "| network | pass | " + " | ".join(SMALL) + " | table after the pass |",
             "|---|---|" + "---|" * len(SMALL) + "---|"]
    for net in dict.fromkeys(r["network"] for r in rows):
        for name in ("cold", "sweep", "rerun"):
            got = {r["buffer"]: r for r in rows if r["network"] == net and r["pass"] == name}
            cells = [f"{_pct(got[b]['gap'])} ({_pct(got[b]['above_optimum'])})" if b in got
                     else "" for b in SMALL]
            last = [r for r in rows if r["network"] == net and r["pass"] == name][-1:]
            shapes = as_float(last[0]["table_shapes"]) if last else None
            table = "-" if not shapes else \
                f"{int(shapes):,} shapes, {as_float(last[0]['table_mb']):.1f} MB"
            lines.append(f"| {net} | {name} | " + " | ".join(cells) + f" | {table} |")
    within = [r for r in rows if r["pass"] != "cold" and r["buffer"] in SMALL
              and as_float(r["gap"]) is not None and as_float(r["gap"]) < 0.05]
    cold = [r for r in rows if r["pass"] == "cold" and as_float(r["gap"]) is not None
            and as_float(r["gap"]) < 0.05]
    total = sum(1 for r in rows if r["pass"] == "cold")
    lines += ["", f"Within 5 %: cold {len(cold)} of {total}; with the table kept (sweep or "
              f"rerun) {len(within)} of {2 * total}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS))
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    optima = known_optima()
    # (the other networks' rows of an earlier run are kept: rerunning one keeps the rest)
    rows = [r for r in read_rows(RESULTS_DIR / "nest_store.csv")
            if r["network"] not in args.networks]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for net in args.networks:
        rows += passes(net, args.time_limit, args.threads, optima)
        rows.sort(key=lambda r: NETWORKS.index(r["network"]) if r["network"] in NETWORKS
                  else len(NETWORKS))
        write_csv(RESULTS_DIR / "nest_store.csv", rows, COLUMNS)
        write_text(RESULTS_DIR / "nest_store.md", render_md(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
