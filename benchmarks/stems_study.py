"""The STEMS study reproduced with proven optima: one run writes STUDY.md, its CSVs and plots.

Sections (each beside the claim of the STEMS paper it answers, see
``/work/shared/reference/BENCHMARKS.md``):

1. **Reductions.** SEW-ResNet-18 and RED-LIF at 1 MB, traffic and energy:
   the optimum against the layer-by-layer schedules ST-LBL and TB-LBL and
   against the best named (STEMS-style) schedule. Claim: inter-layer
   scheduling cuts traffic by up to 12x and energy by up to 5x.
2. **State removal.** The 7PLIF..1PLIF variants of SEW-ResNet-18 at 1 MB:
   state bits, optimal traffic and energy. Claim: 5PLIF has 20x less state
   and 1.4x less energy.
3. **Ski slope.** A :mod:`stems_opt.sweep` over buffer sizes (128 KB..2 MB)
   of SEW-ResNet-18, its 5PLIF variant, RED-LIF and SEW-ResNet-152, traffic,
   every point proven or given with its gap.
4. **Outside STEMS's space.** What the optimal mapping uses that STEMS's
   schedules cannot express (time batches between 1 and T, mixed residency,
   tensors kept on chip across segments), and what each is worth: the
   optimal mapping with that feature taken out (ablation, other decisions
   kept; an upper bound on the feature's own gain, since a re-optimisation
   without it could rearrange the rest).
5. **Stronger baselines.** ``stems-opt compare`` with every baseline (named
   schedules, greedy fusion, local search) on SEW-ResNet-18 at 1 MB with its
   defaults, timed against the 60 s target, and on RED-LIF at 1 MB (within
   three times the solve limit: the heuristics run in what the solve leaves).

Outputs in ``benchmarks/results/`` (or ``--out-dir``): ``STUDY.md``,
``study_reductions.csv``, ``study_plif.csv``, ``study_skislope.csv``,
``study_outside.csv``, ``study_baselines.csv``, ``study_skislope.png`` and
``study_sweep.yaml`` (the sweep's grid).

``--quick`` runs a reduced study (two networks and three sizes in the sweep,
a 60 s limit per solve) that says so at the top of STUDY.md; the full study
is the default. Every number comes from the run itself: the sweep CSV of an
earlier run is replaced, unless ``--resume`` keeps its points (after an
interrupted run; STUDY.md then says how many came from before). ``--out-dir``
sends everything elsewhere, for a trial run that leaves ``benchmarks/results``
as it is.

Examples
--------
::

    python benchmarks/stems_study.py --quick
    python benchmarks/stems_study.py --time-limit 600 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from stems_opt import (  # noqa: E402
    Mapping,
    Placement,
    Problem,
    Result,
    StateMode,
    StemsInputError,
    check,
    evaluate,
    load_instance,
    named_schedule,
)
from stems_opt.heuristics import NAMED, Frame, greedy_mapping  # noqa: E402
from stems_opt.incumbents import FALLBACK_SCHEDULES  # noqa: E402
from stems_opt.size_bounds import size_envelope  # noqa: E402
from stems_opt.solvers import solve_and_score  # noqa: E402
from stems_opt.sweep import (  # noqa: E402
    KEY_COLUMNS,
    load_sweep,
    local_executor,
    read_done,
    run_sweep,
    size_label,
    with_named_fallback,
)

SIZES_FULL = ("128KB", "256KB", "384KB", "512KB", "1MB", "2MB")
SIZES_QUICK = ("256KB", "1MB", "2MB")
SWEEP_NETWORKS_FULL = ("sew_resnet18", "sew_resnet18_5plif", "red_lif", "sew_resnet152")
SWEEP_NETWORKS_QUICK = ("sew_resnet18", "sew_resnet18_5plif")
CLAIM_TRAFFIC_X = 12.0
CLAIM_ENERGY_X = 5.0
CLAIM_STATE_X = 20.0
CLAIM_PLIF_ENERGY_X = 1.4


@dataclass(frozen=True)
class Settings:
    """How hard the study works."""

    quick: bool
    time_limit_s: float
    workers: int
    out_dir: Path = RESULTS_DIR
    resume: bool = False


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _solve(problem: Problem, settings: Settings,
           schedules: tuple[str, ...] = NAMED) -> tuple[Result, dict[str, Result]]:
    """The optimum and the named ``schedules``, scored in a second process meanwhile (any
    the time limit cut off are scored after); an unproven answer worse than a named
    schedule is replaced by it, as the solver's own fallback does (see
    :func:`stems_opt.sweep.with_named_fallback`)."""
    r, scored = solve_and_score(problem, schedules, time_limit_s=settings.time_limit_s)
    named = {n: v if isinstance(v, Result) else named_schedule(problem, n)
             for n, v in scored.items()}
    r = with_named_fallback(problem, r, named.values())
    print(f"  {problem.name} {problem.objective.value}: {_status(r)}, {r.runtime_s:.1f} s",
          file=sys.stderr)
    return r, named


def _status_text(status: str, gap: float | None) -> str:
    """``optimal``, or the status with its gap to the proven bound (``no bound`` if none)."""
    if status == "optimal":
        return "optimal"
    if gap is not None:
        return f"{status}, gap {100 * gap:.2f}%"
    return f"{status}, no bound"


def _status(r: Result) -> str:
    return _status_text(r.status.value, r.gap)


def _fmt(value: float | None, objective: str) -> str:
    if value is None:
        return "n/f"
    return f"{value / 1e6:,.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/f"
    return f"{a / b:.2f}x"


def _write_csv(out_dir: Path, name: str, rows: Sequence[dict[str, Any]]) -> None:
    path = out_dir / name
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _value(r: Result) -> float | None:
    return r.objective_value if r.feasible else None


# ---------------------------------------------------------------------------
# 1. Reductions over layer-by-layer
# ---------------------------------------------------------------------------

def reductions(settings: Settings) -> tuple[list[dict[str, Any]], list[str], dict]:
    rows, optima = [], {}
    for inst in ("sew_resnet18_1mb", "red_lif_1mb"):
        for obj in ("traffic", "energy"):
            p = load_instance(ROOT / "instances" / f"{inst}.yaml", obj)
            opt, named = _solve(p, settings)
            optima[(inst, obj)] = (p, opt, named)
            fitting = {n: r for n, r in named.items() if r.feasible}
            best = min(fitting, key=lambda n: fitting[n].objective_value) if fitting else ""
            rows.append({
                "instance": inst, "objective": obj,
                **{n: _value(r) for n, r in named.items()},
                "best_named": best,
                "optimum": opt.objective_value, "status": opt.status.value, "gap": opt.gap,
                "bound": opt.bound,
                "st_lbl_over_opt": _div(_value(named["ST-LBL"]), opt.objective_value),
                "tb_lbl_over_opt": _div(_value(named["TB-LBL"]), opt.objective_value),
                "best_named_over_opt": _div(fitting[best].objective_value if best else None,
                                            opt.objective_value),
                "lbl_over_best_named": _div(min(filter(None, (_value(named["ST-LBL"]),
                                                              _value(named["TB-LBL"]))),
                                                default=None),
                                            fitting[best].objective_value if best else None),
            })
    md = ["## 1. Reductions over layer-by-layer schedules (1 MB buffer)", "",
          f"STEMS claims inter-layer scheduling cuts off-chip traffic by up to "
          f"{CLAIM_TRAFFIC_X:g}x and energy by up to {CLAIM_ENERGY_X:g}x over intra-layer-"
          "optimised layer-by-layer schedules, on SEW-ResNet-18 and RED-LIF. Values: traffic "
          "in Mbit, energy in µJ; ratios are schedule / optimum (and best layer-by-layer / "
          "best named, STEMS's own comparison).", "",
          "| instance | objective | ST-LBL | TB-LBL | best named | optimum | status | "
          "ST-LBL / opt | TB-LBL / opt | best named / opt | LBL / best named |",
          "|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        bn = f"{r['best_named']} {_fmt(r[r['best_named']], r['objective'])}" \
            if r["best_named"] else "n/f"
        md.append(f"| {r['instance']} | {r['objective']} | {_fmt(r['ST-LBL'], '')} | "
                  f"{_fmt(r['TB-LBL'], '')} | {bn} | {_fmt(r['optimum'], '')} | "
                  f"{_status_text(r['status'], r['gap'])} | {_x(r['st_lbl_over_opt'])} | "
                  f"{_x(r['tb_lbl_over_opt'])} | "
                  f"{_x(r['best_named_over_opt'])} | {_x(r['lbl_over_best_named'])} |")
    return rows, md, optima


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b in (None, 0) else a / b


def _x(v: float | None) -> str:
    return "n/f" if v is None else f"{v:.2f}x"


def reductions_verdict(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The section's reading, beside the claims: the optimum over the weaker and over the
    stronger layer-by-layer schedule, and STEMS's own comparison (best layer-by-layer
    over best named schedule) in this tool's cost model."""
    out = [""]
    for obj, claim in (("traffic", CLAIM_TRAFFIC_X), ("energy", CLAIM_ENERGY_X)):
        rs = [r for r in rows if r["objective"] == obj]
        weaker = [max(v) for r in rs
                  if (v := [x for x in (r["st_lbl_over_opt"], r["tb_lbl_over_opt"]) if x])]
        stronger = [min(v) for r in rs
                    if (v := [x for x in (r["st_lbl_over_opt"], r["tb_lbl_over_opt"]) if x])]
        own = [r["lbl_over_best_named"] for r in rs if r["lbl_over_best_named"]]
        if not weaker:
            out.append(f"{obj.capitalize()}: no layer-by-layer schedule fits.")
            continue
        if max(stronger) >= claim:
            reading = "the optimum reaches it even over the stronger layer-by-layer schedule."
        elif max(weaker) >= claim:
            reading = ("it is reached here only against the weaker layer-by-layer schedule; "
                       "against the stronger one the optimum's reduction is smaller on this "
                       "model.")
        else:
            reading = "not reached on this model, even against the weaker layer-by-layer one."
        out.append(
            f"{obj.capitalize()}: the optimum is up to {max(weaker):.1f}x below the weaker "
            f"layer-by-layer schedule and up to {max(stronger):.1f}x below the stronger one; "
            f"STEMS's own comparison (best layer-by-layer over best named schedule) gives up "
            f"to {max(own, default=math.nan):.1f}x here. STEMS claims up to {claim:g}x: "
            f"{reading}")
        out.append("")
    unproven = [f"{r['instance']} ({r['objective']}, gap {100 * r['gap']:.2f}%)" for r in rows
                if r["status"] != "optimal" and r["gap"] is not None]
    if unproven or any(r["status"] != "optimal" for r in rows):
        out += ["Not proven within the time limit: "
                + (", ".join(unproven) or "see the status column")
                + ". Their ratios are against the best mapping found, so the optimum's "
                "reduction is at least the ratio shown.", ""]
    out.append("The layer-by-layer baselines here are this tool's ST-LBL and TB-LBL with the "
               "greedy residency rule, on the modelled edge accelerator; STEMS's own "
               "baselines and energy model differ, so the ratios answer the same question "
               "on a different cost model, not a replication of its figures.")
    return out


# ---------------------------------------------------------------------------
# 2. State removal: 7PLIF..1PLIF
# ---------------------------------------------------------------------------

def plif_series(settings: Settings, optima: dict) -> tuple[list[dict[str, Any]], list[str]]:
    """The 7PLIF..1PLIF table; 7PLIF's optima are section 1's (``optima``), not re-solved."""
    rows = []
    for n in range(7, 0, -1):
        inst = "sew_resnet18_1mb" if n == 7 else f"sew_resnet18_{n}plif_1mb"
        res = {}
        for obj in ("traffic", "energy"):
            if (inst, obj) in optima:
                p, res[obj], _ = optima[(inst, obj)]
                continue
            p = load_instance(ROOT / "instances" / f"{inst}.yaml", obj)
            res[obj] = _solve(p, settings, FALLBACK_SCHEDULES)[0]
        rows.append({"variant": f"{n}PLIF", "instance": inst,
                     "state_bits": p.network.state_size_bits,
                     "traffic_bits": res["traffic"].objective_value,
                     "traffic_status": _status(res["traffic"]),
                     "energy_pj": res["energy"].objective_value,
                     "energy_status": _status(res["energy"])})
    base = rows[0]
    md = ["## 2. State removal: the 7PLIF..1PLIF variants of SEW-ResNet-18 (1 MB)", "",
          f"STEMS claims 5PLIF keeps {CLAIM_STATE_X:g}x less state than 7PLIF and spends "
          f"{CLAIM_PLIF_ENERGY_X:g}x less energy (accuracy kept by retraining, outside any "
          "mapping tool). Both optima proven per variant unless a gap is shown.", "",
          "| variant | state KB | state 7PLIF / variant | optimal traffic Mbit | "
          "traffic 7PLIF / variant | optimal energy µJ | energy 7PLIF / variant | status |",
          "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        status = r["traffic_status"] if r["traffic_status"] == r["energy_status"] else \
            f"traffic {r['traffic_status']}, energy {r['energy_status']}"
        md.append(f"| {r['variant']} | {r['state_bits'] / 8192:,.1f} | "
                  f"{_x(_div(base['state_bits'], r['state_bits']))} | "
                  f"{_fmt(r['traffic_bits'], '')} | "
                  f"{_x(_div(base['traffic_bits'], r['traffic_bits']))} | "
                  f"{_fmt(r['energy_pj'], '')} | "
                  f"{_x(_div(base['energy_pj'], r['energy_pj']))} | {status} |")
    five = next(r for r in rows if r["variant"] == "5PLIF")
    md += ["", *plif_verdict(base, five)]
    return rows, md


def plif_verdict(base: dict[str, Any], five: dict[str, Any]) -> list[str]:
    """5PLIF against 7PLIF beside the claims (20x less state, 1.4x less energy)."""
    state_x = _div(base["state_bits"], five["state_bits"])
    energy_x = _div(base["energy_pj"], five["energy_pj"])
    proven = all(r[k] == "optimal" for r in (base, five)
                 for k in ("traffic_status", "energy_status"))
    out = [f"7PLIF over 5PLIF: state {_x(state_x)} (claim {CLAIM_STATE_X:g}x), energy "
           f"{_x(energy_x)} (claim {CLAIM_PLIF_ENERGY_X:g}x), traffic "
           f"{_x(_div(base['traffic_bits'], five['traffic_bits']))} (no claim)."]
    if energy_x is not None:
        if energy_x > CLAIM_PLIF_ENERGY_X * 1.05:
            side = "more than"
        elif energy_x < CLAIM_PLIF_ENERGY_X * 0.95:
            side = "less than"
        else:
            side = "about"
        out[0] += (f" The energy saving is {side} the claim: this compares the optimiser's "
                   "mappings of both variants, where STEMS compared its best hand-enumerated "
                   "schedules, and the energy model is this tool's.")
    if not proven:
        out.append("Not every value in this comparison is proven (see the status column): "
                   "the ratios compare best mappings found within the time limit.")
    out.append("The state ratio is a property of the network files (state sizes from "
               "BENCHMARKS.md), not of any mapping.")
    return out


# ---------------------------------------------------------------------------
# 3. The ski slope
# ---------------------------------------------------------------------------

def ski_slope(settings: Settings) -> tuple[list[dict[str, str]], list[str]]:
    nets = SWEEP_NETWORKS_QUICK if settings.quick else SWEEP_NETWORKS_FULL
    sizes = SIZES_QUICK if settings.quick else SIZES_FULL
    sweep_file = settings.out_dir / "study_sweep.yaml"
    models = Path(os.path.relpath(ROOT / "models", settings.out_dir)).as_posix()
    sweep_file.write_text(
        "# Written by benchmarks/stems_study.py: the ski-slope grid of STUDY.md.\n"
        f"networks: [{', '.join(f'{models}/networks/{n}.yaml' for n in nets)}]\n"
        f"hardware: {models}/hardware/edge_1mb.yaml\n"
        f"global_buffer_sizes: [{', '.join(sizes)}]\n"
        "objectives: [traffic]\n"
        f"time_limit: {settings.time_limit_s:g}\n")
    threads = 1
    sweep = load_sweep(sweep_file, threads=threads)
    out = settings.out_dir / "study_skislope.csv"
    if out.exists() and not settings.resume:
        out.unlink()  # this script's own output of an earlier run: the study is one run
    resumed = len({tuple(r[c] for c in KEY_COLUMNS) for r in read_done(out)}
                  & set(sweep.keys)) if out.exists() else 0
    start = time.perf_counter()
    if settings.workers > 1:
        with local_executor(settings.workers) as pool:
            rows = run_sweep(sweep, out, pool, resume=True)
    else:
        rows = run_sweep(sweep, out, resume=True)
    wall = time.perf_counter() - start
    own_proven = sum(r["status"] == "optimal" for r in rows)
    rows = size_envelope(rows)
    try:
        from stems_opt.plots import skislope_plot

        skislope_plot(rows, settings.out_dir / "study_skislope.png")
        plot_line = "![ski slope](study_skislope.png)"
    except StemsInputError as exc:  # matplotlib missing: the tables stand without it
        plot_line = f"(no plot: {exc})"
    md = ["## 3. Ski slope: optimal traffic against global-buffer size", "",
          f"{len(nets)} networks x {len(sizes)} sizes on the edge accelerator (only the "
          f"buffer size changes), {settings.workers} local worker(s), "
          f"{settings.time_limit_s:g} s per point; {wall:.0f} s of wall time"
          + (f" for the {len(rows) - resumed} points solved in this run ({resumed} kept from "
             "an interrupted earlier run by `--resume`)" if resumed else "")
          + ". Traffic in Mbit; `n/f`: no "
          "mapping of that kind fits; `-`: none found within the time limit. A point not "
          "proven shows its gap to the proven lower bound. Sizes of one network prove "
          "for each other: the bound at a size is the largest bound of any larger size "
          "(the optimum never rises as the buffer shrinks), the mapping the best found at "
          "any smaller size (it fits this one at the same cost); the last column says "
          f"where that changed a point ({own_proven} of {len(rows)} points were proven by "
          "their own solve).", "", plot_line, "",
          "| network | buffer | optimum | status | best named | best named / opt | "
          "compulsory | opt / compulsory | from other sizes |",
          "|---|---|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        opt = float(r["value"]) if r["value"] else None
        bn = float(r["best_named_value"]) if r["best_named_value"] else None
        comp = float(r["compulsory_traffic_bits"])
        status = _status_text(r["status"], float(r["gap"]) if r["gap"] else None)
        md.append(f"| {r['network']} | {size_label(int(r['gb_capacity_bits']))} | "
                  f"{_fmt(opt, '') if opt is not None or r['status'] == 'infeasible' else '-'}"
                  f" | {status} | "
                  f"{r['best_named'] + ' ' + _fmt(bn, '') if bn else 'n/f'} | "
                  f"{_x(_div(bn, opt))} | {comp / 1e6:,.2f} | {_x(_div(opt, comp))} | "
                  f"{r['envelope'] or '-'} |")
    unproven = sum(r["status"] != "optimal" for r in rows)
    md += ["", f"{len(rows) - unproven} of {len(rows)} points proven optimal"
           + (f"; the other {unproven} show their gap to the proven bound." if unproven
              else "."), "", *memory_needed(rows)]
    return rows, md


def memory_needed(rows: Sequence[dict[str, str]]) -> list[str]:
    """Per network, the smallest buffer of the sweep at which the optimum, and the best
    named schedule, move only the compulsory traffic (no buffer can do better)."""
    out = ["How much buffer is enough (the smallest size swept at which the traffic "
           "equals the compulsory traffic, which no buffer size can beat):", ""]
    nets = dict.fromkeys(r["network"] for r in rows)
    for net in nets:
        pts = sorted((r for r in rows if r["network"] == net),
                     key=lambda r: int(r["gb_capacity_bits"]))

        def first(column: str, pts: list[dict[str, str]] = pts) -> str:
            hit = next((r for r in pts if r[column] and
                        float(r[column]) == float(r["compulsory_traffic_bits"])), None)
            if hit is not None:
                return f"from {size_label(int(hit['gb_capacity_bits']))}"
            last = pts[-1]
            ratio = _div(float(last[column]) if last[column] else None,
                         float(last["compulsory_traffic_bits"]))
            return f"not within {size_label(int(last['gb_capacity_bits']))} " \
                f"({_x(ratio)} of it there)"

        out.append(f"- {net}: the optimum {first('value')}; the best named schedule "
                   f"{first('best_named_value')}.")
    return out


# ---------------------------------------------------------------------------
# 4. Outside STEMS's space
# ---------------------------------------------------------------------------

def census(problem: Problem, mapping: Mapping) -> dict[str, int]:
    """What ``mapping`` uses that STEMS's schedules do not express."""
    T = problem.network.timesteps
    segs = mapping.segments
    return {
        "segments": len(segs),
        "intermediate_time_batches": sum(1 < s.time_batch < T for s in segs),
        "mixed_weight_residency": sum(
            len({w.resident for w in s.weights.values()}) > 1 for s in segs),
        "mixed_state_modes": sum(len(set(s.states.values())) > 1 for s in segs),
        "kept_across_segments": sum(p is Placement.ON_CHIP for s in segs
                                    for p in s.inputs.values()),
        "tile_resident_states": sum(m is StateMode.TILE_RESIDENT for s in segs
                                    for m in s.states.values()),
    }


def _score(problem: Problem, mapping: Mapping | None) -> float | None:
    if mapping is None or check(problem, mapping):
        return None
    return evaluate(problem, mapping).objective_value(problem.objective.value)


def only_stems_time_batches(problem: Problem, mapping: Mapping) -> Mapping | None:
    """Each intermediate ``Tb`` moved to 1 or T (the better valid choice, segment by
    segment), every other decision kept; ``None`` if no choice is valid."""
    T = problem.network.timesteps
    segs = list(mapping.segments)
    for i, s in enumerate(segs):
        if not 1 < s.time_batch < T:
            continue
        best = None
        for tb in (1, T):
            trial = Mapping((*segs[:i], s.replace(time_batch=tb), *segs[i + 1:]))
            v = _score(problem, trial)
            if v is not None and (best is None or v < best[0]):
                best = (v, trial.segments[i])
        if best is None:
            return None
        segs[i] = best[1]
    return Mapping(tuple(segs))


def nothing_kept_across(problem: Problem, mapping: Mapping) -> Mapping:
    """Every tensor from an earlier segment read from DRAM."""
    segs = [s.replace(inputs=dict.fromkeys(s.inputs, Placement.DRAM)) for s in mapping.segments]
    return Mapping(tuple(segs)).canonical(problem.network)


def greedy_memory(problem: Problem, mapping: Mapping) -> Mapping | None:
    """The optimum's segments, time batches and tile counts with every memory decision
    left to the named schedules' greedy rule (STEMS's greedy memory manager)."""
    frames = [Frame(s.layers, s.time_batch, s.tiles, len(s.layers) > 1)
              for s in mapping.segments]
    try:
        return greedy_mapping(problem, frames)
    except StemsInputError:  # e.g. the optimum tiles along OX beyond OY's extent
        return None


ABLATIONS = {
    "Tb in {1, T} only": only_stems_time_batches,
    "nothing kept across segments": nothing_kept_across,
    "greedy memory decisions": greedy_memory,
}


def outside(optima: dict) -> tuple[list[dict[str, Any]], list[str]]:
    rows = []
    for (inst, obj), (p, opt, named) in optima.items():
        if opt.mapping is None:
            continue
        c = census(p, opt.mapping)
        ablations = {name: _score(p, fn(p, opt.mapping)) for name, fn in ABLATIONS.items()}
        at_optimum = [n for n, r in named.items()
                      if r.feasible and r.objective_value <= opt.objective_value]
        rows.append({"instance": inst, "objective": obj, "optimum": opt.objective_value,
                     "status": opt.status.value, "gap": opt.gap,
                     "named_at_optimum": " ".join(at_optimum),
                     **c, **{k: v for k, v in ablations.items()}})
    md = ["## 4. What the optimum does outside STEMS's space", "",
          "STEMS's schedules use Tb = 1 or T only, leave residency to a greedy memory "
          "manager, and write every tensor between segments to DRAM. How often the optimal "
          "mapping uses each freedom (segments with an intermediate Tb or mixed residency, "
          "layers whose state is kept tile by tile, tensors kept on chip across segments), "
          "then the optimum with that freedom taken "
          "out (other decisions kept; `n/f`: the result no longer fits or is not valid), as "
          "a ratio to the optimum. An ablation bounds a freedom's gain from above only "
          "when taken alone: re-optimising without it could recover part of the loss.", "",
          "| instance | objective | segments | 1 < Tb < T | mixed weight residency | "
          "mixed state modes | tile-resident states | kept across segments | "
          "Tb in {1, T} only | nothing kept across | greedy memory |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for r in rows:
        md.append(f"| {r['instance']} | {r['objective']} | {r['segments']} | "
                  f"{r['intermediate_time_batches']} | {r['mixed_weight_residency']} | "
                  f"{r['mixed_state_modes']} | {r['tile_resident_states']} | "
                  f"{r['kept_across_segments']} | "
                  f"{_x(_div(r['Tb in {1, T} only'], r['optimum']))} | "
                  f"{_x(_div(r['nothing kept across segments'], r['optimum']))} | "
                  f"{_x(_div(r['greedy memory decisions'], r['optimum']))} |")
        gains = [f"{name} {r[name] / r['optimum']:.3f}x" for name in ABLATIONS
                 if r[name] is not None and r[name] > r["optimum"] * 1.001]
        lost = [name for name in ABLATIONS if r[name] is None]
        if gains or lost:
            notes.append(f"- {r['instance']} ({r['objective']}): "
                         + "; ".join(gains + [f"{n}: does not fit" for n in lost]) + ".")
    if notes:
        md += ["", "Freedoms worth more than 0.1% (the optimum without it, over the optimum):",
               "", *notes]
    reached = [f"{r['instance']} ({r['objective']}: {r['named_at_optimum']})" for r in rows
               if r["named_at_optimum"] and r["status"] == "optimal"]
    if reached:
        md += ["", "Named schedules that reach the proven optimum: " + ", ".join(reached)
               + ". There a schedule of STEMS's kind (filled by this tool's greedy rule) is "
               "optimal too, so the freedoms the mapping analysed uses are one way to the "
               "optimum, not a gain over STEMS's space."]
    unproven = [f"{r['instance']} ({r['objective']}, {_status_text(r['status'], r['gap'])})"
                for r in rows if r["status"] != "optimal"]
    if unproven:
        md += ["", "Not proven optimal within the time limit, so the mapping analysed is the "
               "best found: " + ", ".join(unproven) + "."]
    return rows, md


# ---------------------------------------------------------------------------
# 5. Stronger baselines: `stems-opt compare` with every baseline
# ---------------------------------------------------------------------------

COMPARE_TARGET_S = 60.0
"""``compare`` on SEW-ResNet-18 at 1 MB with every baseline should finish within this."""


def _compare(instance: str, options: Sequence[str]) -> tuple[dict[str, Any], float]:
    """``stems-opt compare INSTANCE --json OPTIONS`` as a user runs it: its documents
    and its wall time (process start to exit)."""
    import json
    import subprocess

    cmd = [sys.executable, "-m", "stems_opt", "compare", str(ROOT / "instances" /
                                                             f"{instance}.yaml"),
           "--json", "--quiet", "--nest-cache", "off", *options]  # (cold, as measured before)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr}")
    return json.loads(done.stdout), wall


def baselines(settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """``compare`` with the named schedules, the greedy fusion and the local search: on
    SEW-ResNet-18 with its defaults (the speed target), on RED-LIF (where the named
    schedules are far from the optimum) within three times the solve limit."""
    # Three solve limits for RED-LIF: the heuristics run in what the solve leaves of it.
    limit = f"{3 * settings.time_limit_s:g}"
    runs = [("sew_resnet18_1mb", [], "defaults"),
            ("red_lif_1mb", ["--time-limit", limit], f"--time-limit {limit}")]
    rows, md_rows, names = [], [], None
    for inst, options, shown in runs:
        print(f"  compare {inst} {shown}", file=sys.stderr)
        docs, wall = _compare(inst, options)
        names = [n for n in docs if n not in ("optimum", "best found")]
        final = docs.get("optimum") or docs["best found"]
        opt = final.get("objective_value")
        row = {"instance": inst, "options": shown, "wall_s": round(wall, 1),
               "optimum": opt, "status": final["status"], "gap": final.get("gap"),
               **{n: docs[n].get("objective_value") for n in names}}
        rows.append(row)
        cells = [_x(_div(row[n], opt)) if row[n] is not None else
                 ("n/f" if docs[n].get("status") == "infeasible" else "not scored")
                 for n in names]
        md_rows.append(f"| {inst} | {shown} | {' | '.join(cells)} | "
                       f"{_status_text(final['status'], final.get('gap'))} | {wall:.0f} s |")
    sew_wall = rows[0]["wall_s"]
    md = ["## 5. Stronger baselines: `stems-opt compare` with every baseline", "",
          "Traffic of each baseline over the optimum (the best found where the status "
          "shows a gap): the named schedules, the greedy "
          "fusion (segments grown while traffic falls and the buffer fits) and the "
          "randomized local search (from the best of them, given the solver's own wall "
          "time). Wall time of the whole command, as a user runs it.", "",
          f"| instance | options | {' | '.join(names or [])} | optimum | wall |",
          "|---|---|" + "---:|" * len(names or []) + "---|---:|", *md_rows, "",
          f"`stems-opt compare instances/sew_resnet18_1mb.yaml` with every baseline took "
          f"{sew_wall:.0f} s (target: under {COMPARE_TARGET_S:g} s"
          + ("; met)." if sew_wall < COMPARE_TARGET_S else "; NOT met).")]
    return rows, md


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def _options(args: argparse.Namespace) -> str:
    """The options that change the numbers, as typed (``--out-dir`` left out)."""
    out = ["--quick"] if args.quick else []
    if args.time_limit is not None:
        out.append(f"--time-limit {args.time_limit:g}")
    out.append(f"--workers {args.workers}")
    if args.resume:
        out.append("--resume")
    return " ".join(out)


def _commit() -> str:
    """The source's git commit, ``-dirty`` with uncommitted changes (``unknown`` outside a
    checkout)."""
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="reduced study: 2 networks x 3 sizes in the sweep, 60 s per solve")
    ap.add_argument("--time-limit", type=float, default=None, metavar="S",
                    help="seconds per solve (default 600, or 60 with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="sweep worker processes")
    ap.add_argument("--resume", action="store_true",
                    help="keep the sweep points of an interrupted earlier run (default: "
                         "solve every point again)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR, metavar="DIR",
                    help="where STUDY.md, its CSVs and plots go (default benchmarks/results; "
                         "a trial run goes elsewhere so it does not replace the study)")
    args = ap.parse_args(argv)
    settings = Settings(args.quick, args.time_limit or (60.0 if args.quick else 600.0),
                        max(1, args.workers), args.out_dir.resolve(), args.resume)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    commit = _commit()  # at the start: the code that computes the numbers
    laps: list[float] = []

    def lap(title: str) -> None:
        laps.append(time.perf_counter())
        print(title, file=sys.stderr)

    lap("1. reductions")
    red_rows, red_md, optima = reductions(settings)
    _write_csv(settings.out_dir, "study_reductions.csv", red_rows)
    lap("2. 7PLIF..1PLIF")
    plif_rows, plif_md = plif_series(settings, optima)
    _write_csv(settings.out_dir, "study_plif.csv", plif_rows)
    lap("3. ski slope")
    _, sweep_md = ski_slope(settings)
    lap("4. outside STEMS's space")
    out_rows, out_md = outside(optima)
    _write_csv(settings.out_dir, "study_outside.csv", out_rows)
    lap("5. baselines in compare")
    base_rows, base_md = baselines(settings)
    _write_csv(settings.out_dir, "study_baselines.csv", base_rows)
    lap("done")
    wall = time.perf_counter() - start
    sections = ", ".join(f"{i + 1}: {b - a:.0f} s"
                         for i, (a, b) in enumerate(itertools.pairwise(laps)))
    head = ["# The STEMS study, reproduced with proven optima", "",
            f"Written by `python benchmarks/stems_study.py {_options(args)}` at commit "
            f"{commit} on "
            f"{dt.date.today().isoformat()} (Python {platform.python_version()}, "
            f"{settings.time_limit_s:g} s per solve, {settings.workers} sweep worker(s); "
            f"{wall:.0f} s in all, by section {sections}; timings from a "
            f"{os.cpu_count()}-core machine, noisy when it is shared).", ""]
    if args.quick:
        head += ["**Quick mode**: the sweep covers "
                 f"{', '.join(SWEEP_NETWORKS_QUICK)} at {', '.join(SIZES_QUICK)} only. "
                 "Run without `--quick` for the full study (4 networks x 6 sizes).", ""]
    doc = head + red_md + reductions_verdict(red_rows) + [""] + plif_md + [""] + sweep_md + \
        [""] + out_md + [""] + base_md + [""]
    (settings.out_dir / "STUDY.md").write_text("\n".join(doc), encoding="utf-8")
    print(f"wrote {settings.out_dir / 'STUDY.md'} in {wall:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
