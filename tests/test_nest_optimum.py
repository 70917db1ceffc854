"""The joint energy optimum with loop nests against exhaustive enumeration.

On hardware with ``loop_nests`` every step runs its least-energy nest over the
inner buffers (``docs/model.md`` section 6), so a mapping's energy counts the GB
operand traffic and the weight and input buffers as its nests do. The brute force
(``tests/brute_force.py``) scores every mapping of the whole space with the cost
model: its least energy is the optimum over the inter-layer decisions and the nests
together. Both backends, with both methods, must prove it, return a mapping the cost
model scores at exactly the reported energy, and beat or tie every feasible named
schedule (``test_optimizer.assert_optimal``).

The accelerator is the tiny one with a 512-bit weight buffer and a 256-bit input
buffer (``test_bounds.nest_problem``); each hand-picked case keeps the buffer size
of ``test_optimizer.CASES``, where the global buffer binds.

Mutations that make these tests fail (each tried, then reverted): the nests' operand
floors of the frames raised by 1 % (``nest_floor.interval_operand_floors``), and every
column bound raised by 1 % (``ColumnSolver._raise_to``): a solve then stops at a
mapping its model values above what the cost model says, which ``solve`` refuses
(``model objective ... != cost model ...``): each fails two of the four hand-picked
cases (``conv_pool_T2_chunks``, ``ann_snn_reset_T2``) and the random test.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stems_opt.cost.evaluation import evaluate
from stems_opt.io import network_from_dict
from stems_opt.problem import Objective

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf
from test_bounds import nest_problem
from test_optimizer import (
    CASES,
    RANDOM_SETTINGS,
    SPACE_LIMIT,
    UNLIMITED,
    assert_optimal,
    tiny_networks,
)

ENERGY = Objective.ENERGY


@functools.cache
def nest_frontier(name: str) -> tuple[list[bf.Point], bf.Space]:
    """The (peak, memory energy) frontier of a hand-picked case with loop nests, and
    its space (enumerated once per test run: 1-7 s each)."""
    return bf.run_shared(f"nest_frontier-{name}", lambda: _nest_frontier(name))


def _nest_frontier(name: str) -> tuple[list[bf.Point], bf.Space]:
    network, ku, _size = CASES[name]
    space = bf.Space(nest_problem(network, UNLIMITED, ku))
    frontiers, _ = bf.brute_force_frontiers(space.problem, (ENERGY,), space)
    return frontiers[ENERGY], space


@pytest.mark.parametrize("case", list(CASES))
def test_known_case_with_loop_nests(case: str) -> None:
    _, ku, size = CASES[case]
    frontier, space = nest_frontier(case)
    point = bf.optimum_at(frontier, size)
    assert point is not None
    assert point.rank > frontier[-1].rank, "the GB size must bind"
    p = nest_problem(space.network, size, ku)
    cost = evaluate(p, point.mapping)
    # The nests are charged: the inner buffers cost energy and the GB operand
    # accesses differ from one access per use.
    assert cost.energy_pj["inner_levels"] > 0
    assert_optimal(p, point, space)


@settings(**{**RANDOM_SETTINGS, "max_examples": 8})
@given(st.data())
def test_random_tiny_problems_with_loop_nests(data: st.DataObject) -> None:
    """Random 2-3 layer networks, the GB anywhere between the least peak of any
    mapping and the peak of the cheapest one."""
    network = network_from_dict(data.draw(tiny_networks(), label="network"))
    ku = data.draw(st.sampled_from([1, 4]), label="K unrolling")
    space = bf.Space(nest_problem(network, UNLIMITED, ku))
    assume(space.count() <= SPACE_LIMIT)
    frontiers, _ = bf.brute_force_frontiers(space.problem, (ENERGY,), space)
    frontier = frontiers[ENERGY]
    lo, hi = frontier[0].peak_bits, frontier[-1].peak_bits
    size = data.draw(st.one_of(st.sampled_from([pt.peak_bits for pt in frontier]),
                               st.integers(lo, hi)), label="GB bits")
    point = bf.optimum_at(frontier, size)
    assert point is not None
    assert_optimal(nest_problem(network, size, ku), point, space)
