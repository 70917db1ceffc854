"""The capacity-aware frame bound of many signatures at once equals one call per signature.

:func:`stems_opt.formulation.bounds.signatures_excess_bounds` bounds every
(signature, frame) pair of an interval in one set of arrays; the oracle is the
former one-signature computation, kept as
:func:`reference_bounds.frames_excess_bounds_reference`. Equality is exact
(bounds and slacks), on random tiny networks with random budgets and random
tensors written anyway or kept whole, and on every column of the column solver
of the hand-picked cases, for traffic and energy. Together with
``tests/test_bounds.py`` (every frame bound at most the frame's proven local
optimum, which now runs through this computation) this keeps the bound valid.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.formulation import bounds
from stems_opt.formulation.bounds import signatures_excess_bounds
from stems_opt.formulation.data import interval_specs
from stems_opt.io import network_from_dict
from stems_opt.network import Axis
from stems_opt.problem import Objective

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from reference_bounds import frames_excess_bounds_reference  # noqa: E402
from test_bounds import solver_for  # noqa: E402
from test_optimizer import CASES, RANDOM_SETTINGS, make_problem, tiny_networks  # noqa: E402


def assert_same(net, first, last, axis, frames, sigs, **rates) -> None:
    """All signatures in one call give each signature's one-call bound and slack."""
    got_bound, got_slack = signatures_excess_bounds(net, first, last, axis, frames, sigs, **rates)
    assert got_bound.shape == (len(sigs), len(frames))
    for k, (budget, written, whole) in enumerate(sigs):
        want = frames_excess_bounds_reference(net, first, last, axis, frames, budget, written,
                                              whole, **rates)
        assert np.array_equal(got_bound[k], want[0]), (k, sigs[k], got_bound[k], want[0])
        assert np.array_equal(got_slack[k], want[1]), (k, sigs[k])


@settings(**RANDOM_SETTINGS)
@given(st.data())
def test_signatures_together_equal_signatures_apart_random(data: st.DataObject) -> None:
    """Random interval, axis, rates and 1-6 random signatures.

    Mutations that make this fail: charging the halo of a DRAM input the
    signature keeps whole (``dram`` dropped from the kept items); the first
    signature's budget for every row (``budgets[0 * key]``).
    """
    net = network_from_dict(data.draw(tiny_networks(), label="network"))
    L = len(net.layers)
    first = data.draw(st.integers(0, L - 1), label="first")
    last = data.draw(st.integers(first, L - 1), label="last")
    axis = data.draw(st.sampled_from([Axis.OY, Axis.OX]), label="axis")
    inside = [lay.name for lay in net.layers[first:last + 1]]
    touched = sorted({name for lay in net.layers[first:last + 1]
                      for name in (lay.name, *lay.inputs)})
    sigs = data.draw(st.lists(st.tuples(
        st.integers(40, 1200), st.frozensets(st.sampled_from(inside)),
        st.frozensets(st.sampled_from(touched))), min_size=1, max_size=6), label="signatures")
    rates = data.draw(st.sampled_from([dict(), dict(read_rate=7, write_rate=11, k_unroll=4),
                                       dict(read_rate=7, write_rate=11, weight_use_rate=3)]),
                      label="rates")
    frames = [(s[2], s[5], s[4]) for s in interval_specs(net, first, last, (axis,))]
    assert_same(net, first, last, axis, frames, sigs, **rates)


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_tightened_columns_equal_one_call_per_column(case: str, objective: Objective,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every column the solver tightens in one round (the signatures of an interval's
    columns bounded together) gets the bound and slack of one reference call per
    column (the knapsack's: the item cover, ``item_cover.py``, is checked in
    ``test_item_cover.py``). Mutation: every
    signature of a call stored with the first one's bounds (``_fill_cap_bounds``
    storing ``(bound[0], slack[0])``) makes this fail."""
    import stems_opt.formulation.column_bounds as column_bounds

    monkeypatch.setattr(column_bounds, "ITEM_COVER", False)
    network, ku, size = CASES[case]
    cs = solver_for(make_problem(network, size, ku, objective))
    compared = 0
    cs._tighten_for(list(cs.columns), math.inf)
    for col in cs.columns:
        assert col.tight
        budget, written, _, whole = cs._sig_parts(col)
        if budget <= 0:
            continue
        for axis, specs in cs._by_axis(cs.specs[(col.first, col.last)]).items():
            want, slack = frames_excess_bounds_reference(
                cs.net, col.first, col.last, axis, [(s[2], s[5], s[4]) for s in specs], budget,
                written, whole, read_rate=cs.rates[0], write_rate=cs.rates[1],
                k_unroll=cs.ctx.k_unroll, weight_use_rate=cs._weight_use_rate())
            for spec, b, s in zip(specs, want.tolist(), slack.tolist(), strict=True):
                assert col.frame_bounds[spec] == cs._cheapest(spec) + b, (col.sig, spec)
                assert col.frame_slack[spec] == s, (col.sig, spec)
                compared += 1
    assert compared > 0


def test_many_signatures_go_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signatures beyond ``SIGNATURE_CHUNK`` elements go in further passes, with the
    same values as one pass."""
    net = network_from_dict(CASES["chain_T4"][0])
    L = len(net.layers)
    names = [lay.name for lay in net.layers]
    frames = [(s[2], s[5], s[4]) for s in interval_specs(net, 0, L - 1, (Axis.OY,))]
    sigs = [(b, frozenset(names[:k % L]), frozenset()) for k, b in
            enumerate(range(100, 1300, 100))]
    whole = signatures_excess_bounds(net, 0, L - 1, Axis.OY, frames, sigs)
    monkeypatch.setattr(bounds, "SIGNATURE_CHUNK", 1)  # one signature per pass
    sliced = signatures_excess_bounds(net, 0, L - 1, Axis.OY, frames, sigs)
    assert np.array_equal(whole[0], sliced[0]) and np.array_equal(whole[1], sliced[1])
