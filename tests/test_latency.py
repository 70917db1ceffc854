"""Latency and EDP: a hand-computed latency, the DRAM attribution, brute force.

Latency (``docs/model.md`` section 7) is a sum over layer steps of the
largest of the step's on-chip cycles and its own DRAM bits over the DRAM
bandwidth; EDP is found by weighted sums over supported (energy, latency)
points (``docs/solver.md``). The optimiser must equal exhaustive enumeration
for both, with both backends and both methods.
"""

from __future__ import annotations

import functools
import itertools
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.cost import SegmentGeometry, evaluate, mapping_contexts, segment_terms
from stems_opt.cost.energy import nest_hardware
from stems_opt.cost.latency import LayerLatency, batch_classes, dram_reads, latency_floor_cycles
from stems_opt.edp import solve_edp
from stems_opt.io import hardware_from_dict, load_instance, network_from_dict
from stems_opt.mapping import (
    Halo,
    Mapping,
    Order,
    Placement,
    Segment,
    StateMode,
    WeightChoice,
)
from stems_opt.network import Axis
from stems_opt.problem import Objective, Problem
from stems_opt.result import Result, SolveStatus
from stems_opt.solvers import METHODS, solve

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf
from test_optimizer import CASES, hardware_dict

SOLVERS = ("cpsat", "highs")


def slow_hardware(size: int, k_unroll: int, dram_bw: float, gb_bw: float | None) -> Any:
    """The tiny test accelerator with narrow DRAM and GB ports, so that transfers
    (not compute) decide the latency."""
    d = hardware_dict(size, k_unroll)
    d["dram"]["bandwidth_bits_per_cycle"] = dram_bw
    if gb_bw is not None:
        d["global_buffer"]["bandwidth_bits_per_cycle"] = gb_bw
    return hardware_from_dict(d)


# ---------------------------------------------------------------------------
# By hand
# ---------------------------------------------------------------------------
#
# One 1x1 conv `a`, K 2, C 1, LIF (12-bit state, 1-bit spikes, 4-bit weights) on a
# 1 x 4 x 4 spike input, T = 2. Array K: 2; DRAM 4 bits/cycle, GB port 8 bits/cycle,
# no loop nests. |W| = 2*1*4 = 8 bits; a row along OY: input 1*4*1 = 4 bits, output
# 2*4*1 = 8 bits, state 2*4*12 = 96 bits.
# Segment: Tb = 1 (S = 2 time batches), n = 2 tiles of 2 rows along OY, m = 1:
# 2 steps per batch, 4 in all; the input is read from DRAM, the output (a network
# output) written.
#
# On-chip cycles of every step: compute = ceil(2/2) K * 2 rows * 4 cols * Tb 1 = 8
# iterations; GB port, one access per use: input 2 rows x 4 = 8, output 2 x 8 = 16,
# weights 8, state read + written 2 x 2 x 96 = 384 -> 416 bits / 8 = 52 cycles.
# So every step takes at least 52.
#
# (1) weights and state resident (streaming state): each step moves its output
#     (16 bits) and input (8 bits) every batch = 24; the first batch reads each
#     step's state (2 rows x 96 = 192), the last writes it (192); the resident
#     weights (8) come with the very first step.
#     batch 0: 24 + 192 + 8 = 224 -> 56 cycles; 24 + 192 = 216 -> 54
#     batch 1: 216 -> 54, 216 -> 54.            Total 56 + 54 + 54 + 54 = 218.
# (2) weights streamed (once per tile: 8 bits at each step here), state spilled
#     (read and written every batch: 384): 24 + 8 + 384 = 416 bits -> 104 cycles
#     per step, 4 x 104 = 416.

HAND = {"name": "hand", "timesteps": 2, "input": {"channels": 1, "height": 4, "width": 4},
        "layers": [{"name": "a", "type": "conv", "inputs": ["input"], "loop_dims": {"K": 2},
                    "neuron": "lif"}]}
HAND_HW = {"name": "h", "dram": {"read_pj_per_bit": 1, "write_pj_per_bit": 1,
                                 "bandwidth_bits_per_cycle": 4},
           "global_buffer": {"size": 4096, "read_pj_per_bit": 0.1, "write_pj_per_bit": 0.1,
                             "bandwidth_bits_per_cycle": 8},
           "operational_array": {"sizes": {"K": 2}}}


def hand_segment(weight: WeightChoice, state: StateMode) -> Segment:
    return Segment(("a",), 1, 2, Axis.OY, Order.TIME_OUTER, sub_tiles={"a": 1},
                   weights={"a": weight}, states={"a": state},
                   inputs={"input": Placement.DRAM}, halos={"input": Halo.REREAD})


def test_latency_by_hand() -> None:
    p = Problem(network_from_dict(HAND), hardware_from_dict(HAND_HW), Objective.LATENCY)
    resident = evaluate(p, Mapping((hand_segment(WeightChoice(resident=True),
                                                 StateMode.RESIDENT),)))
    assert resident.latency_cycles == 218
    assert resident.segments[0].latency_cycles == 218
    assert resident.objective_value("latency") == 218
    assert resident.edp_pj_cycles == resident.total_energy_pj * 218
    spilled = evaluate(p, Mapping((hand_segment(WeightChoice(), StateMode.SPILLED),)))
    assert spilled.latency_cycles == 416
    # Without the GB port the on-chip floor is the 8 compute iterations: (1) stays 218
    # (every step is DRAM-bound), and a wide DRAM port leaves compute: 4 x 8 = 32.
    wide = dict(HAND_HW, dram={**HAND_HW["dram"], "bandwidth_bits_per_cycle": 1024},
                global_buffer={k: v for k, v in HAND_HW["global_buffer"].items()
                               if k != "bandwidth_bits_per_cycle"})
    q = Problem(p.network, hardware_from_dict(wide), Objective.LATENCY)
    assert evaluate(q, Mapping((hand_segment(WeightChoice(resident=True),
                                             StateMode.RESIDENT),))).latency_cycles == 32


def test_batch_classes() -> None:
    assert batch_classes(1) == ((1, True, True),)
    assert batch_classes(2) == ((1, True, False), (1, False, True))
    assert batch_classes(5) == ((1, True, False), (3, False, False), (1, False, True))


# ---------------------------------------------------------------------------
# Every DRAM bit belongs to exactly one step
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["conv_pool_T2_chunks", "ann_snn_reset_T2"])
def test_step_bits_add_up_to_the_traffic(case: str) -> None:
    """Over every segment variant of every run of the brute-force space, the DRAM
    bits the steps carry add up to the segment's DRAM traffic, layer by layer.

    Mutation: charging resident weights in every time batch (``is_first`` dropped
    in ``LayerLatency.dram_bits``) makes this fail."""
    network, ku, _ = CASES[case]
    p = Problem(network_from_dict(network), slow_hardware(1 << 20, ku, 4, 8))
    space = bf.Space(p)
    hw, nh = p.hardware, nest_hardware(p.hardware)
    checked = 0
    seen: set[tuple[str, str]] = set()  # a segment in one context is checked once
    for runs, idx in itertools.islice(space.valid_walk(), 0, None, 7):
        mapping = space.build(runs, idx)
        for seg, ctx in zip(mapping.segments, mapping_contexts(p.network, mapping),
                            strict=True):
            if (key := (repr(seg), repr(ctx))) in seen:
                continue
            seen.add(key)
            geo = SegmentGeometry(p.network, seg)
            terms = segment_terms(p.network, seg, ctx, geo)
            for lay in geo.layers:
                want = sum(t.read_bits + t.write_bits for t in terms
                           if t.layer == lay.name)
                got = sum(count * int(bits.sum()) for count, bits in LayerLatency(
                    geo, lay, hw, nh).dram_bits(
                        seg.sub_tile(lay.name), seg.weight(lay.name) if lay.has_weights
                        else None, seg.state(lay.name) if lay.stateful else None,
                        lay.name in ctx.written, dram_reads(seg, geo.inside, lay)))
                assert got == want, (seg, lay.name)
                checked += 1
    assert checked > 100


# ---------------------------------------------------------------------------
# Brute force
# ---------------------------------------------------------------------------

LATENCY_CASES = {
    # name: (case, DRAM bits/cycle, GB bits/cycle)
    "conv_pool": ("conv_pool_T2_chunks", 1, 8),
    "ann_snn_reset": ("ann_snn_reset_T2", 4, 16),
}


@functools.cache
def case_problem(name: str, objective: Objective) -> Problem:
    case, dram_bw, gb_bw = LATENCY_CASES[name]
    network, ku, size = CASES[case]
    return Problem(network_from_dict(network), slow_hardware(size, ku, dram_bw, gb_bw),
                   objective)


@functools.cache
def front(name: str) -> tuple[tuple[int, int, Mapping], ...]:
    """The enumerated (memory fJ, cycles, mapping) Pareto set of a case (one
    walk over its space serves the latency and the EDP optimum)."""
    return tuple(bf.energy_latency_points(case_problem(name, Objective.EDP)))


def brute(name: str, objective: Objective) -> tuple[float, Mapping]:
    """The enumerated least latency or EDP (pJ x cycles) and a mapping reaching
    it, from the Pareto set: the least latency is its last point's, the least
    product one of its points' (``E x L`` grows with both)."""
    points = front(name)
    if objective is Objective.LATENCY:
        _, cycles, mapping = points[-1]
        return cycles, mapping
    constant = bf.energy_constant_fj(case_problem(name, objective))
    mem, cycles, mapping = min(points, key=lambda q: (q[0] + constant) * q[1])
    return (mem + constant) * cycles / 1000, mapping


@pytest.mark.parametrize("name", list(LATENCY_CASES))
def test_latency_optimum_equals_brute_force(name: str) -> None:
    """Both backends, both methods prove the enumerated least latency.

    Mutation: dropping the DRAM term of a step (``np.maximum(core, ...)`` ->
    ``core``) in the option costs only makes the solver's objective disagree with
    the cost model (asserted in solve) or miss this optimum."""
    p = case_problem(name, Objective.LATENCY)
    value, mapping = brute(name, Objective.LATENCY)
    assert evaluate(p, mapping).latency_cycles == value
    # Transfers decide it: the optimum is above the compute-only latency.
    assert value > sum(s.latency_cycles for s in evaluate(Problem(
        p.network, slow_hardware(p.hardware.gb_capacity_bits, p.hardware.array.factor("K"),
                                 1 << 20, None)), mapping).segments)
    for solver, method in itertools.product(SOLVERS, METHODS):
        r = solve(p, solver, method=method)
        assert r.status is SolveStatus.OPTIMAL, (solver, method, r.message)
        assert r.objective_value == value, (solver, method)
        assert r.cost is not None and r.cost.latency_cycles == value


@pytest.mark.parametrize("name", list(LATENCY_CASES))
def test_edp_optimum_equals_brute_force(name: str) -> None:
    """The weighted-sum search finds the enumerated least energy x latency (the
    least product over the whole Pareto set), with both backends.

    Mutation: answering with the least-latency solve's mapping instead of the best
    product fails on ``ann_snn_reset`` (its Pareto points: 13,527 pJ x 738 cycles
    and 18,821 pJ x 734 cycles; the first has the smaller product)."""
    p = case_problem(name, Objective.EDP)
    value, best_mapping = brute(name, Objective.EDP)
    assert evaluate(p, best_mapping).edp_pj_cycles == pytest.approx(value, rel=1e-12)
    for solver in SOLVERS:
        r = solve(p, solver)
        assert r.status is SolveStatus.OPTIMAL, (solver, r.message)
        assert r.objective_value == pytest.approx(value, rel=1e-12)
        assert r.cost is not None
        assert r.cost.edp_pj_cycles == pytest.approx(value, rel=1e-12)
        assert int(r.stats["weighted_solves"]) >= 2


# ---------------------------------------------------------------------------
# The dichotomic search on explicit point sets
# ---------------------------------------------------------------------------

def fake_solver(points: list[tuple[int, int]], unproven: set[tuple[int, int]] = frozenset()
                ) -> tuple[Any, list[tuple[int, int]]]:
    """A ``solve_one`` over a finite set of ``(energy fJ, cycles)`` points: the first
    point minimising ``a E + b L`` (the order of ``points`` breaks ties), reported
    optimal unless its weights are in ``unproven``; also the weights asked for."""
    asked: list[tuple[int, int]] = []

    def solve_one(problem: Problem, **_: Any) -> Result:
        a, b = problem.weights
        asked.append((a, b))
        e, lat = min(points, key=lambda p: a * p[0] + b * p[1])
        cost = SimpleNamespace(memory_energy_fj=e, latency_cycles=lat, total_energy_pj=e / 1000,
                               edp_pj_cycles=e * lat / 1000)
        status = SolveStatus.FEASIBLE if (a, b) in unproven else SolveStatus.OPTIMAL
        low = min(a * p[0] + b * p[1] for p in points)
        return Result(status, "fake", "edp", mapping=None, cost=cost,  # type: ignore[arg-type]
                      objective_value=a * e + b * lat, bound=low)
    return solve_one, asked


@given(st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=25))
@settings(max_examples=300, deadline=None)
def test_dichotomic_search_finds_the_least_product(points: list[tuple[int, int]]) -> None:
    """Over any finite set of points, the weighted-sum search returns the least
    ``E x L`` (the minimum of a quasi-concave function sits at a supported point),
    with at most two solves per supported point plus one."""
    problem = Problem(network_from_dict(HAND), hardware_from_dict(HAND_HW), Objective.EDP)
    solve_one, asked = fake_solver(points)
    r = solve_edp(problem, solve_one)
    assert r.status is SolveStatus.OPTIMAL
    assert r.objective_value == min(e * lat for e, lat in points) / 1000
    assert r.bound == r.objective_value
    assert len(asked) <= 2 * len(set(points)) + 1


def test_dichotomic_search_needs_two_splits() -> None:
    """Points A (1, 1000), B (1000, 1), C (200, 200), D (2, 450): products 1000,
    1000, 40000 and 900, so D is the answer, and only a second split finds it.

    (1, 0) and (0, 1) give A and B; their normal (999, 999) / 999 = (1, 1) gives C
    (sum 400 < 452 of D). For P, Q the weights are (L_P - L_Q, E_Q - E_P). Split
    C-B (popped first): (200 - 1, 1000 - 200) = (199, 800), both ends at 199800,
    nothing below. Split A-C: (1000 - 200, 200 - 1) = (800, 199): A and C at
    199800, D at 800*2 + 199*450 = 91150 below: found. Then D-C: (250, 198) /
    2 = (125, 99), both at 44800; A-D: (550, 1), both at 1550. Seven solves.

    Mutation: not splitting a segment when a point lies below it (``stack +=``
    in ``solve_edp`` replaced by ``pass``) answers 1000 and fails."""
    problem = Problem(network_from_dict(HAND), hardware_from_dict(HAND_HW), Objective.EDP)
    solve_one, asked = fake_solver([(1, 1000), (1000, 1), (200, 200), (2, 450)])
    r = solve_edp(problem, solve_one)
    assert r.status is SolveStatus.OPTIMAL
    assert r.objective_value == 900 / 1000
    assert asked == [(1, 0), (0, 1), (1, 1), (199, 800), (800, 199), (125, 99), (550, 1)]


def test_unproven_weighted_solve_gives_a_valid_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A weighted solve left unproven makes the answer ``feasible`` with the bound
    ``E_min x L_min`` (here 10 x 10 = 100 fJ x cycles), at most the true least
    product (10 x 60 = 600).

    Mutation: reporting ``optimal`` regardless of the solves' status fails here."""
    problem = Problem(network_from_dict(HAND), hardware_from_dict(HAND_HW), Objective.EDP)
    solve_one, _ = fake_solver([(10, 60), (30, 30), (60, 10)], unproven={(1, 1)})
    # (the fake points are not HAND's own latencies: its search-free latency floor,
    # which the bound also takes, is left out of this world)
    monkeypatch.setattr("stems_opt.cost.latency.latency_floor_cycles", lambda *_: 0)
    r = solve_edp(problem, solve_one)
    assert r.status is SolveStatus.FEASIBLE
    assert r.bound == pytest.approx(10 * 10 / 1000)
    assert r.bound <= r.objective_value


def test_edp_bound_without_the_latency_solve() -> None:
    """When only the least-energy solve ran (the limit came before the least-latency
    one), the bound is its energy bound times the search-free latency floor, not 0.
    Mutation: dropping the floor (``least_latency = l_bound or 0.0``) fails."""
    from stems_opt.edp import _answer

    problem = Problem(network_from_dict(HAND), hardware_from_dict(HAND_HW), Objective.EDP)
    solve_one, _ = fake_solver([(10, 60_000)], unproven={(1, 0)})
    first = solve_one(problem.weighted(1, 0))
    r = _answer(problem, [first], False, 0.0, first.bound, None, [])
    floor = latency_floor_cycles(problem.network, problem.hardware)
    assert floor > 0 and r.bound == pytest.approx(10 / 1000 * floor)


def test_edp_never_worse_than_a_seed() -> None:
    """With weighted solves that only return a poor mapping (the Pareto point of
    the largest product, as an unproven solve might), the answer's product is at
    most every seed mapping's, and equals the best seed's (``solve(...,
    mappings=...)`` passes them on).

    Mutation: dropping the seeds (``seeded = []`` in ``edp._answer``) answers
    the poor mapping and fails."""
    p = case_problem("ann_snn_reset", Objective.EDP)
    seeds = [m for _, _, m in front("ann_snn_reset")]
    edp = {id(m): evaluate(p, m).edp_pj_cycles for m in seeds}
    worst = max(seeds, key=lambda m: edp[id(m)])
    assert min(edp.values()) < edp[id(worst)]

    def poor(problem: Problem, **_: Any) -> Result:
        cost = evaluate(problem, worst)
        return Result(SolveStatus.FEASIBLE, "poor", "edp", mapping=worst, cost=cost,
                      objective_value=cost.objective_value("edp", problem.weights), bound=0.0)

    r = solve_edp(p, poor, seeds, method="columns")
    assert r.objective_value == min(edp.values())
    assert all(r.objective_value <= v for v in edp.values())
    r = solve(p, mappings=seeds, time_limit_s=30)
    assert r.objective_value <= min(edp.values())


# ---------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------

def tight_frames(p: Problem) -> tuple[int, int]:
    """Every frame bound of every column against the frame's proven optimum (as
    ``test_bounds.check_bounds``): ``(frames compared, frames where they are equal)``."""
    from test_bounds import solver_for

    cs = solver_for(p)
    compared = tight = 0
    for col in cs.columns:
        cs.tighten(col)
        extra = cs._extra(col.first, col.last, col.sig)
        for spec in cs.specs[(col.first, col.last)]:
            frame = cs._frame(spec)
            restricted = None if frame is None else cs._restrict(frame, col.sig)
            local = None if restricted is None else cs._local(*restricted, 60.0)
            if local is None or (col.exact and col.value is None):
                continue
            value, proven, _ = local
            assert value == proven
            bound = col.frame_bounds[spec] + extra
            assert bound <= value, (col.sig, spec, bound, value)
            compared += 1
            tight += bound == value
    return compared, tight


@pytest.mark.parametrize("weights", [None, (3, 1000)], ids=["latency", "weighted"])
@pytest.mark.parametrize("name", list(LATENCY_CASES))
def test_latency_frame_bounds_below_the_frame_optimum(name: str,
                                                      weights: tuple[int, int] | None) -> None:
    """The frame bounds with latency (compute and DRAM floors per layer,
    ``frame_latency_floor``) never exceed a frame's proven optimum, for latency
    and for a weighted EDP step; some are tight.

    Mutation: adding one cycle to ``frame_latency_floor`` makes the tight frames
    exceed their optimum (``assert bound <= value`` fails)."""
    p = case_problem(name, Objective.LATENCY)
    if weights is not None:
        p = p.weighted(*weights)
    compared, tight = tight_frames(p)
    assert compared > 0 and tight > 0


def test_weights_beyond_exact_arithmetic_are_rounded_and_unproven() -> None:
    """Energies of 10^12 fJ against latencies of 10^7 cycles: the normal of the
    extremes, (L1 - L2, E2 - E1) ~ (10^7, 10^12), puts ``a E + b L`` far past 2^45,
    so the weights are scaled down; the answer is still the least product found
    (here the middle point, 2 x 10^12 x 2 x 10^7 against 10^12 x 5 x 10^7), but
    ``feasible``, with a bound no larger.

    Mutation: keeping ``proven`` after rounding reports ``optimal`` and fails."""
    problem = Problem(network_from_dict(HAND), hardware_from_dict(HAND_HW), Objective.EDP)
    big = [(10 ** 12, 5 * 10 ** 7), (2 * 10 ** 12, 2 * 10 ** 7), (5 * 10 ** 12, 10 ** 7)]
    solve_one, asked = fake_solver(big)
    r = solve_edp(problem, solve_one)
    assert r.status is SolveStatus.FEASIBLE
    assert r.objective_value == 2 * 10 ** 12 * 2 * 10 ** 7 / 1000
    assert r.bound <= r.objective_value
    assert all(a * 5 * 10 ** 12 < 2 ** 45 for a, _ in asked)


# ---------------------------------------------------------------------------
# Command line and API
# ---------------------------------------------------------------------------

TINY_CHAIN = Path(__file__).resolve().parent.parent / "instances" / "tiny_chain.yaml"


def test_evaluate_reports_latency_and_edp(capsys: pytest.CaptureFixture[str]) -> None:
    """``evaluate --objective latency --json``: the objective value is the latency,
    and the EDP is the total energy times it."""
    import json

    from stems_opt.cli import main

    assert main(["evaluate", str(TINY_CHAIN), "--schedule", "TB-F", "--objective", "latency",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["objective"] == "latency"
    assert doc["objective_value"] == doc["latency_cycles"] > 0
    assert doc["edp_pj_cycles"] == pytest.approx(doc["energy_pj"]["total"]
                                                 * doc["latency_cycles"], rel=1e-12)
    assert sum(s["latency_cycles"] for s in doc["segments"]) == doc["latency_cycles"]


def test_edp_model_cannot_be_written(tmp_path: Path) -> None:
    from stems_opt.errors import StemsInputError
    from stems_opt.solvers import write_model

    p = load_instance(TINY_CHAIN, "edp")
    with pytest.raises(StemsInputError, match="write-model"):
        write_model(p, str(tmp_path / "m.lp"))
    assert not (tmp_path / "m.lp").exists()


@pytest.mark.parametrize("name", list(LATENCY_CASES))
def test_latency_floor_never_above_the_least_latency(name: str) -> None:
    """``latency_floor_cycles`` (the search-free bound a stopped latency solve reports)
    is at most the enumerated least latency, on the slow-port cases where transfers
    decide the optimum."""
    p = case_problem(name, Objective.LATENCY)
    value, _ = brute(name, Objective.LATENCY)
    assert 0 < latency_floor_cycles(p.network, p.hardware) <= value


@pytest.mark.parametrize("name", ["tiny_chain", "tiny_residual", "tiny_linear", "tiny_reset",
                                  "tiny_ann_snn"])
def test_latency_floor_is_the_compute_of_compute_bound_instances(name: str) -> None:
    """On the bundled tiny instances every layer is compute-bound: the proven least
    latency is the layers' least compute, which is the floor (so the bound is tight
    here, and a floor one cycle higher fails this). A latency search stopped at once
    reports it as its bound, not 0."""
    from stems_opt.stopping import Stop

    p = load_instance(TINY_CHAIN.parent / f"{name}.yaml", "latency")
    r = solve(p, warm_start=False)
    assert r.status is SolveStatus.OPTIMAL
    floor = latency_floor_cycles(p.network, p.hardware)
    assert floor == r.objective_value
    stop = Stop()
    stop.request()
    early = solve(p, stop=stop)
    assert early.bound == floor
