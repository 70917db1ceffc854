"""The order covered frames are raised in (``item_cover.raise_frames``'s ``base`` and
``floor``, ``column_bounds.FRAME_ORDER``).

A column's bound is the least over its frames of each frame's cheapest choices plus
the larger of its excess and the interval's chunk floors; the programs raise each
signature's least frames until the least is a raised one. Least by the excess alone,
the frame the column's bound comes from (cheap choices, little excess) was often
never raised. Checked by hand, against every frame raised on random tiny networks
(traffic, energy with loop nests), and on a SEW-ResNet-152 column whose bound it makes
its exact value.

Mutations that make these tests fail:

* the order by the excess alone (``offset = np.zeros(frames)`` in ``raise_frames``):
  ``test_least_by_the_column_bound`` (``[3, 5]`` for ``[1, 9]``: the column 5 for 9),
  ``test_sew_resnet152_conv3_is_exact`` (86,934,937,600 fJ for 92,455,690,223) and
  ``test_random_least_frame_equals_every_frame_raised`` under hypothesis seeds 2 and 3
  (seed 1 draws no network where it matters);
* the order ignoring the floor (``np.maximum(best, floor)`` replaced by ``best`` in
  ``raise_frames``): ``test_floor_orders_frames_at_it`` (frame 1 left at 9: 10 for 12).

Validity (never above a frame's local optimum) is unchanged: each frame's bound is its
own knapsack, relaxation or program, whatever the order; ``tests/test_bounds.py``,
``test_item_cover.py`` and ``test_subtile_cover.py`` check it with the order in place.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stems_opt.formulation.bounds as bounds_mod
from stems_opt.formulation.item_cover import raise_frames, raise_least
from stems_opt.formulation.subtile_cover import raise_least_subtiles
from stems_opt.io import load_hardware, load_instance, network_from_dict
from stems_opt.problem import Objective, Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bounds import nest_problem, solver_for
from test_optimizer import RANDOM_SETTINGS, make_problem, tiny_networks

ROOT = Path(__file__).resolve().parent.parent


def test_least_by_the_column_bound() -> None:
    # Two frames of one signature: excess 1 and 5, cheapest choices 10 and 0 (column
    # bounds 11 and 5); their programs raise the excess to 3 and 9. By the column bound
    # frame 1 (5) is raised first, to 9; it is still the least (9 < 11) and raised: stop.
    # The column: min(11, 9) = 9, as with both raised (min(13, 9)). By the excess alone
    # frame 0 (1) is raised, to 3, and is still the least (3 < 5): the column would be
    # min(13, 5) = 5.
    programs = [3.0, 9.0]
    got = raise_frames(np.array([1.0, 5.0]), 2, programs.__getitem__,
                       base=np.array([10.0, 0.0]))
    assert got.tolist() == [1.0, 9.0]
    assert (got + np.array([10.0, 0.0])).min() == 9.0


def test_floor_orders_frames_at_it() -> None:
    # Excess 0 and 9, cheapest choices 2 and 0, chunk floor 10: column bounds
    # 2 + max(0, 10) = 12 and 0 + max(9, 10) = 10; programs 0 and 14. By the column bound
    # frame 1 (10) is raised first, to 14; frame 0 (12) is then the least, raised (its
    # program 0 leaves it at 12) and still the least: the column is min(12, 14) = 12, as
    # with both raised. Without the floor in the order frame 0 (2 < 9) is raised first,
    # stays the least, and frame 1 is never raised: the column would be min(12, 10) = 10.
    got = raise_frames(np.array([0.0, 9.0]), 2, [0.0, 14.0].__getitem__,
                       base=np.array([2.0, 0.0]), floor=10.0)
    assert got.tolist() == [0.0, 14.0]
    assert (np.maximum(got, 10.0) + np.array([2.0, 0.0])).min() == 12.0


def _least_frames(p: Problem, every: bool) -> dict[tuple, float]:
    """Each column's least covered frame bound (with the signature's extra)."""
    with pytest.MonkeyPatch.context() as mp:
        if every:
            mp.setattr(bounds_mod, "raise_least", partial(raise_least, every=True))
            mp.setattr(bounds_mod, "raise_least_subtiles",
                       partial(raise_least_subtiles, every=True))
        cs = solver_for(p)
        got = {}
        for col in cs.columns:
            cs.tighten(col, cover=True)
            key = (col.first, col.last, col.sig)
            if col.exact and col.value is None:
                got[key] = math.inf
                continue
            got[key] = min(col.frame_bounds.values(), default=math.inf) + cs._extra(
                col.first, col.last, col.sig)
    return got


@settings(**{**RANDOM_SETTINGS, "max_examples": 10})
@given(st.data())
def test_random_least_frame_equals_every_frame_raised(data: st.DataObject) -> None:
    """Each column's least covered frame is the least with every frame raised by its
    program: the order leaves no frame below its program where the column's bound
    comes from (traffic, and energy with loop nests)."""
    network = network_from_dict(data.draw(tiny_networks(), label="network"))
    size = data.draw(st.integers(40, 1200), label="GB bits")
    k = data.draw(st.sampled_from([1, 4]), label="K unrolling")
    nests = data.draw(st.booleans(), label="energy with loop nests")
    p = nest_problem(network, size, k) if nests else make_problem(network, size, k,
                                                                  Objective.TRAFFIC)
    assert _least_frames(p, False) == _least_frames(p, True)


def sew_resnet152_384kb_least_frame(at: int, want: tuple) -> tuple:
    """SEW-ResNet-152 at 384 KB, energy with loop nests: the one-layer column at ``at``
    whose signature's ``(whole_in, outputs)`` is ``want``, tightened with the item cover;
    the column, its least frame and that frame's local optimum and proven bound."""
    base = load_instance(ROOT / "instances" / "sew_resnet152_1mb.yaml")
    hw = dataclasses.replace(load_hardware(ROOT / "models" / "hardware" / "edge_384kb.yaml"),
                             loop_nests=True)
    p = Problem(base.network, hw, Objective.ENERGY, "sew_resnet152_384kb", (),
                base.max_segment_layers)
    cs = solver_for(p)
    col = next(c for c in cs.columns if (c.first, c.last) == (at, at)
               and (c.sig.whole_in, c.sig.outputs) == want)
    cs.tighten(col, cover=True)
    spec = min(col.frame_bounds, key=col.frame_bounds.get)
    value, proven, _ = cs._local(*cs._restrict(cs._frame(spec), col.sig), 60.0)
    return col, spec, value, proven


def test_sew_resnet152_conv3_is_exact() -> None:
    """SEW-ResNet-152 at 384 KB, energy with loop nests: ``s3_b1_conv3`` alone with its
    inputs kept whole and its output kept whole, not written. Its best frame (one tile,
    ``Tb = 4``) must stream its 1 Mbit weights in two sub-tiles (held whole beside the
    whole output, a sub-tile holds 14 state rows: m = 14, whose nests cost 305 uJ), one
    more read of them: 92,455,690,240 fJ, its local optimum, which the column's bound now
    reaches (to float rounding). It was bounded at 86,934,937,600 (its knapsack; covered,
    80,800,767,995: the frame was never raised)."""
    want = (("s3_b0_add", True), ("s3_b1_conv2", True)), (("s3_b1_conv3", True, False),)
    col, spec, value, proven = sew_resnet152_384kb_least_frame(55, want)
    assert spec[2] == 4 and spec[4] == 1
    assert value == proven == 92_455_690_240
    # (the excess is lowered by 1e-9 of itself against float rounding: 17 fJ of
    # 17,638,563,840 here)
    assert value - 18 <= col.bound <= value
