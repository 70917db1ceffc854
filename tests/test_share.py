"""Work done once: frames shared across buffer sizes and objectives
(``stems_opt/formulation/frame_store.py``) and the operand-energy floors from
arrays (``stems_opt/formulation/operand_floors.py``).

* A frame taken from the store (built for a larger buffer, or for another
  objective's terms) equals a fresh build at the solve's own buffer, option
  for option and in the same order, on bundled networks at every size of the
  ski-slope range and on random tiny problems.
* Solves give the same value and the same mapping with the store warmed by
  larger buffers and other objectives as with an empty one, with both
  backends, and both backends agree.
* The array floors equal ``frame_operand_floor_fj`` on every interval and tile
  count, with and without loop nests.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.formulation import frame_store as store_mod
from stems_opt.formulation.data import (
    Frame,
    FrameBuildStoppedError,
    FrameKey,
    _FrameBuilder,
    frame_axes,
    interval_specs,
    make_context,
)
from stems_opt.formulation.frame_store import FrameStore, clear_frame_store, shared_network
from stems_opt.formulation.operand_floors import frame_operand_floor_fj, operand_floor_fj
from stems_opt.io import load_hardware, load_instance, load_network
from stems_opt.mapping import Order, StateMode
from stems_opt.problem import Objective, Problem
from stems_opt.size_bounds import with_capacity
from stems_opt.solvers import solve
from stems_opt.sweep import SweepPoint, largest_buffer_first

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_optimizer import CASES, RANDOM_SETTINGS, make_problem, random_case

ROOT = Path(__file__).resolve().parent.parent
KB = 8 * 1024


def _fresh(problem: Problem, spec: FrameKey) -> tuple[dict, dict] | None:
    """The options and halo bits a build at the problem's own buffer makes (what
    ``ColumnSolver._frame`` built before the store)."""
    fb = _FrameBuilder(make_context(problem), *spec)
    options = fb.build()
    if options is None or (spec[5] is Order.SPACE_OUTER and not any(
            o.state is StateMode.TILE_RESIDENT for opts in options.values() for o in opts)):
        return None
    return options, fb.halo_bits(options)


def _assert_same(fresh: tuple[dict, dict] | None, shared: Frame | None) -> None:
    if fresh is None or shared is None:
        assert fresh is None and shared is None
        return
    options, halo = fresh
    assert list(options) == list(shared.options)
    assert list(halo.items()) == list(shared.halo_bits.items())
    for name, opts in options.items():
        got = shared.options[name]
        assert len(opts) == len(got), name
        for a, b in zip(opts, got, strict=True):
            assert a == b and np.array_equal(a.coeff, b.coeff)


def _sample_specs(problem: Problem, count: int, seed: int = 1) -> list[FrameKey]:
    import random

    rng = random.Random(seed)
    net = problem.network
    L = len(net.layers)
    # Every one- and two-layer interval once (so every tensor is read from outside
    # some frame), then random ones up to three layers.
    out = [rng.choice(interval_specs(net, first, min(L - 1, first + k), frame_axes(net)))
           for k in (0, 1) for first in range(L)]
    for _ in range(count):
        first = rng.randrange(L)
        last = min(L - 1, first + rng.randrange(3))
        out.append(rng.choice(interval_specs(net, first, last, frame_axes(net))))
    return out


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
def test_store_equals_a_fresh_build_at_every_size(objective: Objective) -> None:
    """RED-LIF from 2 MB down to 128 KB (and back up, which rebuilds): every frame
    from the store is the frame a build at that size makes. At 128 KB some
    tensors are too large to stay whole and some frames do not fit, so dropping
    the whole-candidate filter of inputs read on chip (``_at_capacity``), or
    ordering contexts as built rather than by first fit, fails this. (A context
    keeping a too-large output whole holds the tensor, so the capacity filter
    drops it too.)"""
    clear_frame_store()
    base = load_instance(ROOT / "instances" / "red_lif_1mb.yaml")
    problem = Problem(base.network, base.hardware, objective, "red_lif", (),
                      base.max_segment_layers)
    specs = _sample_specs(problem, 10)
    sizes = [2048, 512, 256, 128, 384, 1024]
    nones = 0
    for kb in sizes:
        p = with_capacity(problem, kb * KB)
        store = FrameStore(make_context(p))
        for spec in specs:
            fresh = _fresh(p, spec)
            nones += fresh is None
            _assert_same(fresh, store.frame(spec))
    assert nones > 0, "some frame must not fit the smallest buffer"
    bits = [make_context(with_capacity(problem, kb * KB)).whole_candidates for kb in sizes]
    assert len(bits[3]) < len(bits[0]), "some tensor must be a whole candidate only at 2 MB"


def test_stopped_build_stores_nothing() -> None:
    """A frame build the deadline stops between layers raises and leaves no frame
    in the store: the next request builds it whole, equal to a fresh build. (A
    time limit must not wait for a multi-layer frame, and a half-built frame kept
    in the store would price later columns wrongly.) Storing the partial options
    instead of raising, or checking ``stop`` only before the first layer, fails
    this."""
    clear_frame_store()
    base = load_instance(ROOT / "instances" / "red_lif_1mb.yaml")
    net = base.network
    spec = interval_specs(net, 0, 2, frame_axes(net))[0]  # three layers
    store = FrameStore(make_context(base))
    calls = []

    def stop_at_second_layer() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(FrameBuildStoppedError):
        store.frame(spec, stop_at_second_layer)
    assert len(calls) == 2
    assert spec not in store.frames
    _assert_same(_fresh(base, spec), store.frame(spec))


def test_terms_shared_across_objectives() -> None:
    """Energy frames built on the terms traffic frames left in the store (and the
    reverse) equal fresh builds; the terms are the cost model's, not the
    objective's."""
    clear_frame_store()
    base = load_instance(ROOT / "instances" / "sew_resnet18_5plif_1mb.yaml")
    specs = _sample_specs(base, 4, seed=3)
    for objective in (Objective.TRAFFIC, Objective.ENERGY, Objective.LATENCY):
        p = Problem(base.network, load_hardware(ROOT / "models/hardware/edge_256kb.yaml"),
                    objective, "p", (), base.max_segment_layers)
        store = FrameStore(make_context(p))
        for spec in specs:
            _assert_same(_fresh(p, spec), store.frame(spec))
        if objective is not Objective.TRAFFIC:
            assert store.terms is not None and all(store.terms[s] for s in specs)


@settings(**RANDOM_SETTINGS)
@given(st.data())
def test_random_tiny_frames_from_a_larger_buffer(data: st.DataObject) -> None:
    """Random tiny problems: every frame at the drawn buffer, from a store built at
    twice that buffer, equals a fresh build."""
    p, _, _ = random_case(data)
    clear_frame_store()
    big = with_capacity(p, 2 * p.hardware.gb_capacity_bits)
    big_store = FrameStore(make_context(big))
    net = p.network
    L = len(net.layers)
    specs = [s for first in range(L) for last in range(first, L)
             for s in interval_specs(net, first, last, frame_axes(net))]
    for spec in specs:
        big_store.frame(spec)
    store = FrameStore(make_context(p))
    for spec in specs:
        _assert_same(_fresh(p, spec), store.frame(spec))
    assert store.built == 0


def _solve_all(problems: list[Problem], solver: str, warm: bool) -> list[tuple]:
    out = []
    for p in problems:
        if not warm:
            clear_frame_store()
        r = solve(p, solver=solver, threads=1)
        out.append((r.status, r.objective_value, r.mapping))
    return out


@pytest.mark.parametrize("case", ["chain_T4", "conv_pool_T2_chunks"])
def test_solves_identical_with_and_without_sharing(case: str) -> None:
    """A buffer sweep from large to small, energy then traffic, in one process with
    the store kept and with it cleared before each solve: the same status, value
    and mapping at every point, with CP-SAT and HiGHS, and the backends agree on
    every value."""
    network, ku, size = CASES[case]
    net = make_problem(network, size, ku).network
    problems = [make_problem(net, bits, ku, objective)
                for objective in (Objective.ENERGY, Objective.TRAFFIC)
                for bits in (4 * size, 2 * size, size, size * 3 // 4)]
    values = {}
    for solver in ("cpsat", "highs"):
        clear_frame_store()
        warm = _solve_all(problems, solver, warm=True)
        cold = _solve_all(problems, solver, warm=False)
        assert warm == cold
        values[solver] = [v for _, v, _ in warm]
    assert values["cpsat"] == values["highs"]


def test_shared_network_one_object_per_network() -> None:
    """The same file loaded twice gives one object; another state rule another."""
    from stems_opt.network import StatePersistence

    clear_frame_store()
    path = ROOT / "models" / "networks" / "sew_resnet18_5plif.yaml"
    a, b = load_network(path), load_network(path)
    assert a is not b and shared_network(a) is shared_network(b) is a
    c = replace(b, state_persistence=StatePersistence.RESET)
    assert shared_network(c) is c


def test_store_groups_bounded() -> None:
    """At most ``STORE_GROUPS`` (network, hardware, objective) groups are kept."""
    clear_frame_store()
    network, ku, size = CASES["chain_T4"]
    for _ in range(store_mod.STORE_GROUPS + 3):
        FrameStore(make_context(make_problem(network, size, ku)))
    assert len(store_mod._STORE) == store_mod.STORE_GROUPS


def test_largest_buffer_first() -> None:
    """Each network, hardware and objective in decreasing buffer size, the groups in
    their first point's order; a point without a size keeps its place."""
    def pt(net: str, obj: str, bits: int | None) -> tuple[SweepPoint, tuple[str, ...]]:
        return SweepPoint(net, "hw.yaml", obj, bits), (net, obj, str(bits))

    todo = [pt("a", "traffic", 1), pt("a", "traffic", 4), pt("b", "energy", 2),
            pt("a", "energy", 3), pt("a", "traffic", 2), pt("b", "energy", 8),
            pt("c", "energy", None)]
    got = [k for _, k in largest_buffer_first(todo)]
    assert got == [("a", "traffic", "4"), ("a", "traffic", "2"), ("a", "traffic", "1"),
                   ("b", "energy", "8"), ("b", "energy", "2"), ("a", "energy", "3"),
                   ("c", "energy", "None")]


@pytest.mark.parametrize("loop_nests", [False, True])
@pytest.mark.parametrize("instance", ["red_lif_1mb", "sew_resnet18_5plif_1mb", "tiny_residual"])
def test_operand_floor_arrays(instance: str, loop_nests: bool) -> None:
    """Every interval (up to 5 layers) and tile count: the prefix sums (one tile)
    and the matrix product (every count) equal ``frame_operand_floor_fj``.
    Dropping the state reads from ``_layer_parts`` fails this."""
    problem = load_instance(ROOT / "instances" / f"{instance}.yaml")
    net = problem.network
    hw = replace(problem.hardware, loop_nests=loop_nests)
    L = len(net.layers)
    for axis in frame_axes(net):
        for first in range(L):
            for last in range(first, min(L, first + 5)):
                N = min(lay.extent(axis) for lay in net.layers[first:last + 1])
                for n in sorted({min(N, k) for k in (1, 2, 3, N // 2 or 1, N)}):
                    assert operand_floor_fj(net, first, last, axis, n, hw) == \
                        frame_operand_floor_fj(net, first, last, axis, n, hw), (first, last, n)
