"""The interval-wide operand floors (``stems_opt.formulation.nest_floor``) equal
the per-frame floor of ``bounds.frame_operand_floor_fj`` exactly, frame by frame.

The per-frame floor's own validity (never above a frame's optimum) is checked
in ``tests/test_bounds.py`` (``test_frame_bounds_with_loop_nests_random``),
which runs through the columns method and so through these arrays.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.formulation.bounds import frame_operand_floor_fj
from stems_opt.formulation.nest_floor import interval_operand_floors
from stems_opt.io import load_instance, network_from_dict
from stems_opt.network import Axis, Network, divisors

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_bounds import nest_problem  # noqa: E402
from test_optimizer import RANDOM_SETTINGS, make_problem, tiny_networks  # noqa: E402


def assert_equal_floors(net: Network, hw: object, intervals: list[tuple[int, int]]) -> int:
    """Every frame of ``intervals``: the array's value equals the per-frame floor."""
    checked = 0
    for first, last in intervals:
        for axis in (Axis.OY, Axis.OX):
            for tb in (None, *divisors(net.timesteps)):
                got = interval_operand_floors(net, first, last, axis, hw, tb)
                N = min(lay.extent(axis) for lay in net.layers[first:last + 1])
                assert len(got) == N
                for n in range(1, N + 1):
                    want = frame_operand_floor_fj(net, first, last, axis, n, hw, tb)
                    assert int(got[n - 1]) == want, (first, last, axis, tb, n)
                    checked += 1
    return checked


@settings(**{**RANDOM_SETTINGS, "max_examples": 15})
@given(st.data())
def test_interval_floors_equal_frame_floors_random(data: st.DataObject) -> None:
    """Random tiny networks, with and without loop nests. Sharing a layer's
    nest floor between intervals with different first layers (it depends on
    the layers after it only) would break this if that were false."""
    network = network_from_dict(data.draw(tiny_networks(), label="network"))
    size = data.draw(st.integers(40, 1200), label="GB bits")
    k_u = data.draw(st.sampled_from([1, 4]))
    p = nest_problem(network, size, k_u) if data.draw(st.booleans()) else \
        make_problem(network, size, k_u)
    L = len(p.network.layers)
    assert assert_equal_floors(p.network, p.hardware, [(f, la) for f in range(L)
                                                       for la in range(f, L)]) > 0


def test_interval_floors_equal_frame_floors_red_lif() -> None:
    """RED-LIF (strides, padding, a linear layer) on the reference accelerator
    with loop nests, on intervals ending at a few layers."""
    p = load_instance(ROOT / "instances" / "red_lif_1mb.yaml", objective="energy")
    hw = p.hardware if p.hardware.loop_nests else \
        type(p.hardware)(**{**p.hardware.__dict__, "loop_nests": True})
    L = len(p.network.layers)
    intervals = [(f, la) for la in (2, L // 2, L - 1) for f in range(max(0, la - 3), la + 1)]
    assert assert_equal_floors(p.network, hw, intervals) > 0
