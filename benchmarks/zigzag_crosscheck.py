"""Cross-check of the intra-layer loop-nest model against ZigZag.

On ANN-equivalent steps (``T = 1``, no neuron state) of SEW-ResNet-18 and
RED-LIF, one accelerator is described identically to both tools: the
reference edge accelerator (``models/hardware/edge_1mb.yaml``): a 32 (K) x
2 (C) x 16 (OY) array, one-word registers per PE (no access energy), the
weight buffer (32 KB, W), the input buffer (16 KB, I), the 1 MB global
buffer (W, I, O) and DRAM, with the same energies per bit.

(a) **Pinned nest.** :func:`stems_opt.cost.loops.optimal_nest` finds the
    least-energy nest of the step; that nest is handed to ZigZag as a fixed
    temporal mapping (per operand, the loops of each memory level) and
    scored by ZigZag's cost model. The access counts are compared operand
    by operand and level by level, and the energy.
(b) **Search.** ZigZag's LOMA searches the same step at ``lpf_limit`` 6, 7
    and 8 (energy objective, same spatial unrolling); its best energy is
    compared with ZigZag's score of stems_opt's nest, with the wall times of
    both searches.

The results go to ``benchmarks/results/zigzag_crosscheck.md`` and ``.csv``;
every difference between the two cost models is explained in
``docs/model.md`` ("Against ZigZag").

Setup (ZigZag lives in its own environment: it pulls sympy, onnx,
matplotlib; ``six`` is an undeclared dependency of 3.9.1)::

    python3.11 -m venv /work/venvs/zigzag
    /work/venvs/zigzag/bin/pip install zigzag-dse==3.9.1 six

Run from the repository root::

    PYTHONPATH=$PWD python3 benchmarks/zigzag_crosscheck.py \\
        --zigzag-python /work/venvs/zigzag/bin/python [--lpf 6 7 8] [--cases NAME ...]

The script runs itself under ``--zigzag-python`` in ``--worker`` mode for
the ZigZag side (that mode imports only ZigZag and the standard library).
Words: ZigZag counts accesses in port words, rounded up per transfer and
memory instance; every port is declared 1 bit wide so that a word is a bit
and the counts are comparable with stems_opt's bits (ZigZag's latency is
then meaningless and is not compared).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
HARDWARE = ROOT / "models" / "hardware" / "edge_1mb.yaml"

# (case name, network file, layer, first output row, end output row): one step each,
# rows along OY, the whole OX extent. Rows are whole multiples of the array's OY
# unrolling (16), so both tools split them the same way.
CASES = (
    ("sew18/b0_conv_b[16:32]", "sew_resnet18.yaml", "b0_conv_b", 16, 32),
    ("sew18/b2_conv_a", "sew_resnet18.yaml", "b2_conv_a", 0, 32),
    ("sew18/b3_conv_b", "sew_resnet18.yaml", "b3_conv_b", 0, 16),
    ("sew18/b4_conv_b", "sew_resnet18.yaml", "b4_conv_b", 0, 8),
    ("sew18/b4_conv_a", "sew_resnet18.yaml", "b4_conv_a", 0, 8),
    ("redlif/conv1[32:48]", "red_lif.yaml", "conv1", 32, 48),
    ("redlif/conv2[16:32]", "red_lif.yaml", "conv2", 16, 32),
    ("redlif/lif14", "red_lif.yaml", "lif14", 0, 12),
)

OPERAND_LEVELS = {"W": ("register", "weight_buffer", "global_buffer", "dram"),
                  "I": ("register", "input_buffer", "global_buffer", "dram"),
                  "O": ("register", "global_buffer", "dram")}
DIRECTIONS = ("rd_out_to_low", "wr_in_by_high", "wr_in_by_low", "rd_out_to_high")


# ---------------------------------------------------------------------------
# The stems_opt side (project environment)
# ---------------------------------------------------------------------------

def build_case(name: str, net_file: str, layer_name: str, lo: int, hi: int) -> dict[str, Any]:
    """One step of ``layer_name`` (output rows ``[lo, hi)``, T = 1, no state),
    its optimal nest and stems_opt's access counts, as a JSON-ready dict."""
    import dataclasses

    from stems_opt.cost.loops import (
        NestHardware,
        clear_nest_table,
        nest_cost,
        optimal_nest,
        step_shape,
    )
    from stems_opt.io import load_hardware, load_network
    from stems_opt.network import Axis

    net = load_network(str(ROOT / "models" / "networks" / net_file))
    hw = load_hardware(str(HARDWARE))
    layer = net.layer(layer_name)
    shape = dataclasses.replace(step_shape(layer, Axis.OY, lo, hi, 1), state_bits=0)
    nh = NestHardware.of(hw)
    clear_nest_table()  # uncached: the real search time
    t0, c0 = time.perf_counter(), time.process_time()
    nest, energy_fj = optimal_nest(shape, nh)
    search_s, search_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    cost = nest_cost(nest, shape, nh)
    assert cost.total_fj == energy_fj
    a, z = layer.window(Axis.OY, lo, hi)
    pad_top = max(0, layer.pad_y - lo * layer.stride_y)
    pad_bottom = (hi - 1) * layer.stride_y + layer.fy - pad_top - (z - a)
    pad_x = layer.pad_x
    held = dict(nest.held)
    loops = [(lp.dim, lp.factor) for lp in nest.loops]
    return {
        "name": name, "layer": layer_name, "rows": [lo, hi],
        "dims": {"K": shape.k, "C": shape.c, "OY": shape.oy, "OX": shape.ox,
                 "FY": shape.fy, "FX": shape.fx},
        "stride": [shape.stride_y, shape.stride_x], "iy": shape.iy, "ix": shape.ix,
        "padding": [[pad_top, max(0, pad_bottom)],
                    [pad_x, (shape.ox - 1) * shape.stride_x + shape.fx - pad_x - shape.ix]],
        "bits": {"W": shape.weight_bits, "I": shape.input_bits, "O": shape.psum_bits,
                 "O_final": shape.output_bits},
        "loops": loops, "held": held, "chunks": shape.chunks,
        "stems_access_bits": {f"{lv}/{op}": list(v) for (lv, op), v in cost.access_bits.items()},
        "stems_energy_fj": {f"{lv}/{op}": v for (lv, op), v in cost.energy_fj.items()},
        "stems_nest_fj": energy_fj, "stems_search_s": search_s,
        "stems_search_cpu_s": search_cpu_s,
        "macs": shape.k * shape.c * shape.oy * shape.ox * shape.fy * shape.fx,
    }


def hardware_description() -> dict[str, Any]:
    """The accelerator as both tools see it: unrolling and every level's size and energies."""
    from stems_opt.io import load_hardware

    hw = load_hardware(str(HARDWARE))
    levels = {lvl.name: {"size": lvl.capacity_bits, "read_pj_per_bit": lvl.read_pj_per_bit,
                         "write_pj_per_bit": lvl.write_pj_per_bit} for lvl in hw.inner_levels}
    gb = hw.global_buffer
    levels["global_buffer"] = {"size": hw.gb_capacity_bits, "read_pj_per_bit": gb.read_pj_per_bit,
                               "write_pj_per_bit": gb.write_pj_per_bit}
    levels["dram"] = {"size": 2**40, "read_pj_per_bit": hw.dram.read_pj_per_bit,
                      "write_pj_per_bit": hw.dram.write_pj_per_bit}
    return {"unrolling": {d: hw.array.factor(d) for d in ("K", "C", "OY")},
            "levels": levels, "accumulate_pj": hw.array.accumulate_pj}


def stems_expected(case: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """stems_opt's counts in ZigZag's terms: per operand, level and direction, bits.

    The nest gives everything below DRAM; the DRAM side of a step held whole in
    the GB is each input tensor read once and the output written once (what
    the joint model charges a single-step layer).
    """
    acc = {k: tuple(v) for k, v in case["stems_access_bits"].items()}
    d, b = case["dims"], case["bits"]
    w_bits = d["K"] * d["C"] * d["FY"] * d["FX"] * b["W"]
    i_bits = d["C"] * case["iy"] * case["ix"] * b["I"]
    o_bits = d["K"] * d["OY"] * d["OX"] * b["O_final"]
    out: dict[str, dict[str, dict[str, int]]] = {op: {} for op in OPERAND_LEVELS}
    for op, buf, size in (("W", "weight_buffer", w_bits), ("I", "input_buffer", i_bits)):
        reg_fills, buf_fills = acc.get(f"{buf}/{op}", (0, 0))
        gb_reads = acc.get(f"global_buffer/{op}", (0, 0))[0]
        out[op]["register"] = {"wr_in_by_high": reg_fills}
        out[op][buf] = {"rd_out_to_low": reg_fills, "wr_in_by_high": buf_fills}
        out[op]["global_buffer"] = {"rd_out_to_low": gb_reads, "wr_in_by_high": size}
        out[op]["dram"] = {"rd_out_to_low": size}
    psum_reads, o_writes = acc.get("global_buffer/O", (0, 0))
    out["O"]["global_buffer"] = {"rd_out_to_low": psum_reads, "wr_in_by_low": o_writes,
                                 "rd_out_to_high": o_bits}
    out["O"]["dram"] = {"wr_in_by_low": o_bits}
    return out


def stems_energy_by_level_pj(case: dict[str, Any], hwd: dict[str, Any]
                             ) -> dict[str, dict[str, float]]:
    """Energy (pJ) per operand and level of ``stems_expected`` at the hardware's rates."""
    out: dict[str, dict[str, float]] = {}
    for op, levels in stems_expected(case).items():
        out[op] = {}
        for lv, dirs in levels.items():
            if lv == "register":
                continue
            rate = hwd["levels"][lv]
            out[op][lv] = sum(v * (rate["read_pj_per_bit"] if k.startswith("rd")
                                   else rate["write_pj_per_bit"]) for k, v in dirs.items())
    return out


# ---------------------------------------------------------------------------
# The ZigZag side (--worker, ZigZag's environment; standard library + zigzag only)
# ---------------------------------------------------------------------------

def _port(name: str, kind: str, alloc: list[str], bits: int) -> dict[str, Any]:
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits,
            "allocation": alloc}


def _memory(size: int, r_pj: float, w_pj: float, mem_ops: list[str], served: list[str],
            outputs: bool, port_bits: int = 1) -> dict[str, Any]:
    reads = [f"{m}, tl" for m in mem_ops if m != "O"]
    writes = [f"{m}, fh" for m in mem_ops if m != "O"]
    if outputs:
        reads += ["O, tl", "O, th"]
        writes += ["O, fh", "O, fl"]
    return {"size": size, "r_cost": r_pj, "w_cost": w_pj, "area": 0.0, "latency": 1,
            "operands": mem_ops, "served_dimensions": served,
            "ports": [_port("r_port_1", "read", reads, port_bits),
                      _port("w_port_1", "write", writes, port_bits)]}


def zigzag_accelerator(case: dict[str, Any], hwd: dict[str, Any]) -> dict[str, Any]:
    """The accelerator in ZigZag's format (memories innermost first; I1 = I, I2 = W).

    Registers hold one word of their operand (its precision; their ports are
    one word wide, which ZigZag needs to unroll the array) and cost nothing;
    a weight register is shared along OY (D3), an input register along K
    (D1), an output register along C (D2, the spatial reduction).
    """
    lv, b = hwd["levels"], case["bits"]
    everything = ["D1", "D2", "D3"]  # one instance serves the whole array
    mems = {
        "reg_W": _memory(b["W"], 0.0, 0.0, ["I2"], ["D3"], False, b["W"]),
        "reg_I": _memory(b["I"], 0.0, 0.0, ["I1"], ["D1"], False, b["I"]),
        "reg_O": _memory(b["O"], 0.0, 0.0, ["O"], ["D2"], True, b["O"]),
        **{name: _memory(lv[name]["size"], lv[name]["read_pj_per_bit"],
                         lv[name]["write_pj_per_bit"], ops, everything, outputs)
           for name, ops, outputs in (("weight_buffer", ["I2"], False),
                                      ("input_buffer", ["I1"], False),
                                      ("global_buffer", ["I1", "I2", "O"], True),
                                      ("dram", ["I1", "I2", "O"], True))},
    }
    u = hwd["unrolling"]
    return {"name": "edge_1mb_crosscheck", "memories": mems,
            "operational_array": {"unit_energy": hwd["accumulate_pj"], "unit_area": 1.0,
                                  "dimensions": ["D1", "D2", "D3"],
                                  "sizes": [u["K"], u["C"], u["OY"]]}}


def zigzag_workload(case: dict[str, Any]) -> list[dict[str, Any]]:
    """The step as a one-layer ZigZag workload (padding clips the input to the window)."""
    d, (sy, sx) = case["dims"], case["stride"]
    return [{
        "id": 0, "name": case["layer"], "operator_type": "Conv",
        "equation": "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
        "dimension_relations": [f"ix={sx}*ox+1*fx", f"iy={sy}*oy+1*fy"],
        "loop_dims": ["B", "K", "C", "OY", "OX", "FY", "FX"],
        "loop_sizes": [1, d["K"], d["C"], d["OY"], d["OX"], d["FY"], d["FX"]],
        "operand_precision": dict(case["bits"]),
        "operand_source": {"I": 0, "W": 0},
        "pr_loop_dims": ["IY", "IX"], "pr_loop_sizes": [case["iy"], case["ix"]],
        "padding": case["padding"],
    }]


def zigzag_mapping(hwd: dict[str, Any]) -> list[dict[str, Any]]:
    """The array's fixed spatial unrolling, as in ``operational_array.sizes``."""
    u = hwd["unrolling"]
    return [{"name": "default",
             "spatial_mapping": {"D1": [f"K, {u['K']}"], "D2": [f"C, {u['C']}"],
                                 "D3": [f"OY, {u['OY']}"]},
             "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"}}]


def pinned_temporal_mapping(case: dict[str, Any]) -> dict[str, list[list[tuple[str, int]]]]:
    """stems_opt's nest as ZigZag's per-operand levels (innermost loop first).

    Registers get no loop (ZigZag moves the innermost operand-irrelevant loops
    of the level above into them, which is stems_opt's stationary run); a
    buffer gets the loops it holds; the GB the rest of the step; DRAM the
    weight-chunk loop of a streamed layer.
    """
    loops = [tuple(lp) for lp in case["loops"]]
    top: list[tuple[str, int]] = []
    if case["chunks"] > 1:
        top, loops = [loops[-1]], loops[:-1]
    held = case["held"]
    out = {}
    for op in ("W", "I"):
        p = held.get(op, 0)
        out[op] = [[], loops[:p], loops[p:], top]
    out["O"] = [[], loops, top]
    return out


def _cme_record(cme: Any) -> dict[str, Any]:
    acc = {}
    energy = {}
    util = {}
    for op, levels in cme.memory_word_access.items():
        name = str(op)
        acc[name] = [{str(dd): int(lv.get(dd)) for dd in lv.data} for lv in levels]
        energy[name] = [float(e) for e in cme.mem_energy_breakdown[op]]
        util[name] = [float(u) for u in cme.mem_utili_shared[op]]
    return {"energy_total_pj": float(cme.energy_total), "mac_energy_pj": float(cme.mac_energy),
            "mem_energy_pj": float(cme.mem_energy), "word_access": acc,
            "mem_energy_breakdown_pj": energy, "mem_utili_shared": util,
            "temporal_mapping": str(cme.temporal_mapping)}


def worker(job_path: str, out_path: str) -> None:
    """Score every case's pinned nest in ZigZag and run LOMA at each lpf_limit."""
    import logging

    logging.disable(logging.CRITICAL)
    import yaml  # zigzag depends on pyyaml
    from zigzag.api import get_hardware_performance_zigzag
    from zigzag.datatypes import LayerDim, LayerOperand
    from zigzag.mapping.temporal_mapping import TemporalMapping, TemporalMappingType
    from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
    from zigzag.stages.main import MainStage
    from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
    from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
    from zigzag.stages.parser.workload_parser import WorkloadParserStage
    from zigzag.stages.stage import Stage
    from zigzag.stages.workload_iterator import WorkloadStage

    class PinnedStage(Stage):
        """Yields the one temporal mapping given in ``pinned`` instead of a search."""

        def __init__(self, list_of_callables: Any, *, pinned: Any, **kwargs: Any):
            super().__init__(list_of_callables, **kwargs)
            self.pinned = pinned
            self.layer = kwargs["layer"]

        def run(self) -> Any:
            tm_dict = {LayerOperand(op): [[(LayerDim(dim), f) for dim, f in lvl] for lvl in lvls]
                       for op, lvls in self.pinned.items()}
            tm = TemporalMapping(tm_dict, self.layer, TemporalMappingType.UNEVEN)
            kwargs = dict(self.kwargs, temporal_mapping=tm, layer=self.layer)
            sub = self.list_of_callables[0](self.list_of_callables[1:], **kwargs)
            yield from sub.run()

        def is_leaf(self) -> bool:
            return False

    import zigzag

    job = json.loads(Path(job_path).read_text())
    hwd = job["hardware"]
    records: dict[str, dict[str, Any]] = {}

    def save() -> None:  # after every run, so that a long search leaves what it finished
        Path(out_path).write_text(json.dumps(
            {"zigzag_version": getattr(zigzag, "__version__", "?"),
             "results": list(records.values())}, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for i, case in enumerate(job["cases"]):
            base = Path(tmp) / f"case{i}"
            base.mkdir()
            acc_yaml, wl_yaml, map_yaml = base / "acc.yaml", base / "wl.yaml", base / "map.yaml"
            acc_yaml.write_text(yaml.safe_dump(zigzag_accelerator(case, hwd), sort_keys=False))
            wl_yaml.write_text(yaml.safe_dump(zigzag_workload(case), sort_keys=False))
            map_yaml.write_text(yaml.safe_dump(zigzag_mapping(hwd), sort_keys=False))
            files[case["name"]] = (base, str(acc_yaml), str(wl_yaml), str(map_yaml))
            t0 = time.perf_counter()
            main = MainStage([WorkloadParserStage, AcceleratorParserStage, WorkloadStage,
                              SpatialMappingGeneratorStage, PinnedStage, CostModelStage],
                             accelerator=str(acc_yaml), workload=str(wl_yaml),
                             mapping=str(map_yaml), pinned=pinned_temporal_mapping(case),
                             access_same_data_considered_as_no_access=True,
                             nb_mappings_generated=1)
            cmes = [c for c, _ in main.run()]
            records[case["name"]] = {"name": case["name"], "pinned_s": time.perf_counter() - t0,
                                     "pinned": _cme_record(cmes[0]), "loma": {}}
            save()
        # One lpf_limit for every case before the next: a cut-short run has whole columns.
        for lpf in job["lpf"]:
            for case in job["cases"]:
                only = job.get("lpf_only", {}).get(str(lpf), job.get("search_cases"))
                if only is not None and case["name"] not in only:
                    continue
                base, acc_yaml, wl_yaml, map_yaml = files[case["name"]]
                t0, c0 = time.perf_counter(), time.process_time()
                energy, _, cmes = get_hardware_performance_zigzag(
                    wl_yaml, acc_yaml, map_yaml, opt="energy",
                    dump_folder=str(base / f"lpf{lpf}"), lpf_limit=lpf,
                    nb_spatial_mappings_generated=1, loma_show_progress_bar=False)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                best = cmes[0][1][0][0]  # SumStage's (total, [(layer cme, info)])
                records[case["name"]]["loma"][str(lpf)] = {
                    "wall_s": wall, "cpu_s": cpu, "energy_pj": float(energy),
                    "best": _cme_record(best)}
                print(f"  {case['name']}: lpf {lpf}: {wall:.1f} s wall, {cpu:.1f} s CPU",
                      file=sys.stderr, flush=True)
                save()


# ---------------------------------------------------------------------------
# Comparison and report
# ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zigzag-python", help="python of the environment ZigZag is installed in")
    parser.add_argument("--lpf", type=int, nargs="*", default=[6, 7, 8],
                        help="LOMA lpf_limit values (default 6 7 8; none: pinned nests only)")
    parser.add_argument("--slow-lpf", type=int, default=8,
                        help="the lpf_limit that runs only on --slow-cases (default 8)")
    parser.add_argument("--slow-cases", nargs="*",
                        help="cases searched at --slow-lpf (default: all)")
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--search-cases", nargs="*",
                        help="cases LOMA searches (default: all; the others are pinned only)")
    parser.add_argument("--merge", nargs="*", default=[],
                        help="raw JSON files of earlier runs whose LOMA results are added")
    parser.add_argument("--out", default=str(RESULTS / "zigzag_crosscheck"),
                        help="output stem: .md, .csv, _access.csv, _raw.json")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the report from the stem's _raw.json (no ZigZag run)")
    parser.add_argument("--note", default="", help="a sentence added to the report")
    parser.add_argument("--worker", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if not args.zigzag_python and not args.report_only:
        parser.error("--zigzag-python is required (see the module docstring for the setup)")
    chosen = [c for c in CASES if not args.cases or c[0] in args.cases]
    cases = [build_case(*c) for c in chosen]
    hwd = hardware_description()
    raw = Path(f"{args.out}_raw.json")
    if not args.report_only:
        raw.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            job = Path(tmp) / "job.json"
            only = {str(args.slow_lpf): args.slow_cases} if args.slow_cases is not None else {}
            job.write_text(json.dumps({"hardware": hwd, "cases": cases, "lpf": args.lpf,
                                       "lpf_only": only, "search_cases": args.search_cases}))
            subprocess.run([args.zigzag_python, __file__, "--worker", str(job), str(raw)],
                           check=True)
    zz = json.loads(raw.read_text())
    for extra in args.merge:  # LOMA runs of the same cases made separately
        found = {r["name"]: r for r in json.loads(Path(extra).read_text())["results"]}
        for r in zz["results"]:
            for lpf, run in found.get(r["name"], {}).get("loma", {}).items():
                r["loma"].setdefault(lpf, run)
    if args.merge:
        raw.write_text(json.dumps(zz, indent=1))
    done = {r["name"] for r in zz["results"]}
    cases = [c for c in cases if c["name"] in done]
    write_report(cases, zz, hwd, args.lpf, Path(args.out), args.note)
    return 0


def _zz_bits(rec: dict[str, Any], op: str, case: dict[str, Any]) -> list[dict[str, int]]:
    """ZigZag's accesses of ``op`` per level in bits: words times the port width
    (one word of the operand at the registers, 1 bit elsewhere)."""
    word = case["bits"]["O" if op == "O" else op]
    return [{dd: v * (word if i == 0 else 1) for dd, v in lv.items()}
            for i, lv in enumerate(rec["word_access"][op])]


def write_report(cases: list[dict[str, Any]], zz: dict[str, Any], hwd: dict[str, Any],
                 lpfs: list[int], out: Path, note: str = "") -> None:
    """The access-count table (a), the search table (b), as markdown and CSV."""
    by_name = {r["name"]: r for r in zz["results"]}
    rows_a, rows_b = [], []
    for case in cases:
        rec = by_name[case["name"]]
        exp = stems_expected(case)
        pinned = rec["pinned"]
        for op, levels in OPERAND_LEVELS.items():
            got = _zz_bits(pinned, op, case)
            for i, lv in enumerate(levels):
                for dd in DIRECTIONS:
                    s = exp[op].get(lv, {}).get(dd)
                    z = got[i].get(dd, 0)
                    if s is None and z == 0:
                        continue
                    rows_a.append({"case": case["name"], "operand": op, "level": lv,
                                   "direction": dd, "stems_bits": s if s is not None else "",
                                   "zigzag_bits": z,
                                   "ratio": round(z / s, 4) if s else ""})
        stems_pj = stems_energy_by_level_pj(case, hwd)
        stems_mem = sum(sum(v.values()) for v in stems_pj.values())
        row = {"case": case["name"], "macs": case["macs"],
               "stems_nest_mem_pj": round(stems_mem, 1),
               "zz_pinned_mem_pj": round(pinned["mem_energy_pj"], 1),
               "zz_pinned_total_pj": round(pinned["energy_total_pj"], 1),
               "pinned_fits": all(u <= 1 + 1e-9 for us in pinned["mem_utili_shared"].values()
                                  for u in us),
               "stems_cpu_s": round(case["stems_search_cpu_s"], 4),
               "stems_wall_s": round(case["stems_search_s"], 4)}
        for lpf in lpfs:
            lo = rec["loma"].get(str(lpf))
            if lo:
                row[f"loma{lpf}_total_pj"] = round(lo["energy_pj"], 1)
                row[f"loma{lpf}_over_stems"] = round(lo["energy_pj"] / pinned["energy_total_pj"], 4)
                row[f"loma{lpf}_cpu_s"] = round(lo["cpu_s"], 2)
                row[f"loma{lpf}_wall_s"] = round(lo["wall_s"], 2)
                row[f"loma{lpf}_cpu_speedup"] = round(lo["cpu_s"] / max(case["stems_search_cpu_s"],
                                                                        1e-6))
        rows_b.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, rows in (("_access.csv", rows_a), (".csv", rows_b)):
        with open(f"{out}{suffix}", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)
    Path(f"{out}.md").write_text(_markdown(cases, by_name, rows_a, rows_b, lpfs, zz, note))


def _table(rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return out


def _markdown(cases: list[dict[str, Any]], by_name: dict[str, Any], rows_a: list[dict[str, Any]],
              rows_b: list[dict[str, Any]], lpfs: list[int], zz: dict[str, Any],
              note: str = "") -> str:
    lines = [
        "# stems_opt against ZigZag",
        "",
        f"`python benchmarks/zigzag_crosscheck.py --zigzag-python ...`; ZigZag "
        f"{zz.get('zigzag_version', '?')} in its own Python 3.11 environment; "
        f"{platform.machine()}, 2 cores shared with other jobs (wall times are noisy).",
        "Accelerator: `models/hardware/edge_1mb.yaml` described identically to both "
        "(ports 1 bit wide, registers one word, so that ZigZag's words are bits). "
        "Each case is one step (the output rows shown, all of OX), `T = 1`, no state. "
        "Differences are "
        "explained in `docs/model.md` (\"Against ZigZag\").",
        "",
        "## (b) Energy: stems_opt's nest scored by ZigZag against LOMA's best",
        "",
        "`zz_pinned_total_pj` / `stems_total_pj`: ZigZag's total energy (memories + "
        "MACs) of stems_opt's optimal nest; `loma_total_pj`: LOMA's best; "
        "`loma_over_stems` >= 1 means stems_opt's nest is at least as good. "
        "`stems_cpu_s`: `optimal_nest` CPU time, uncached; `cpu_ratio`: LOMA's CPU "
        "time over it. CPU times, since the wall times on shared cores mostly measure "
        "waiting (LOMA's wall times were 2x to 20x its CPU times).",
        "",
    ]
    lines += _table(rows_b, ["case", "stems_nest_mem_pj", "zz_pinned_mem_pj", "pinned_fits",
                             "zz_pinned_total_pj", "stems_cpu_s", "stems_wall_s"])
    lines += ["", "`stems_nest_mem_pj` / `zz_pinned_mem_pj`: memory energy of the nest "
              "(DRAM to the registers) by stems_opt's and ZigZag's model; `pinned_fits`: "
              "every level's utilisation in ZigZag at most 1. LOMA per `lpf_limit` "
              "(cases and limits not listed did not run: see the notes below):", ""]
    long = []
    for row in rows_b:
        for lpf in lpfs:
            if f"loma{lpf}_total_pj" in row:
                long.append({"case": row["case"], "lpf_limit": lpf,
                             "loma_total_pj": row[f"loma{lpf}_total_pj"],
                             "stems_total_pj": row["zz_pinned_total_pj"],
                             "loma_over_stems": row[f"loma{lpf}_over_stems"],
                             "loma_cpu_s": row[f"loma{lpf}_cpu_s"],
                             "stems_cpu_s": row["stems_cpu_s"],
                             "cpu_ratio": row[f"loma{lpf}_cpu_speedup"],
                             "loma_wall_s": row[f"loma{lpf}_wall_s"]})
    lines += _table(long, ["case", "lpf_limit", "loma_total_pj", "stems_total_pj",
                           "loma_over_stems", "loma_cpu_s", "stems_cpu_s", "cpu_ratio",
                           "loma_wall_s"])
    missing = [f"`{r['case']}` at {', '.join(str(x) for x in lpfs if f'loma{x}_total_pj' not in r)}"
               for r in rows_b if any(f"loma{x}_total_pj" not in r for x in lpfs)]
    if missing:
        lines += ["", "LOMA did not run (or was stopped) for: " + "; ".join(missing) + "."]
    if note:
        lines += ["", note]
    compared = [r for r in rows_a if r["stems_bits"] != ""]
    differ = [r for r in compared if r["stems_bits"] != r["zigzag_bits"]]
    lines += ["", "## (a) Access counts of the pinned nest",
              "", f"{len(compared)} counts compared (bits per operand, level and direction, "
              "from DRAM down to the register fills; all of them in "
              "`zigzag_crosscheck_access.csv`); "
              f"{len(compared) - len(differ)} are equal. The ones that differ "
              "(`ratio` = ZigZag / stems_opt; register fills cost nothing in either tool):", ""]
    lines += _table(differ, ["case", "operand", "level", "direction", "stems_bits",
                             "zigzag_bits", "ratio"])
    lines += ["", "## Nests", ""]
    for case in cases:
        nest = " ".join(f"{d}{f}" for d, f in case["loops"])
        lines.append(f"- `{case['name']}`: dims {case['dims']}, innermost first `{nest}`, "
                     f"buffers hold {case['held']}; ZigZag pinned: "
                     f"`{by_name[case['name']]['pinned']['temporal_mapping']}`")
        for lpf in lpfs:
            lo = by_name[case["name"]]["loma"].get(str(lpf))
            if lo:
                lines.append(f"  - LOMA {lpf}: `{lo['best']['temporal_mapping']}`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
