"""The block floors' search over arrays, shared by translated blocks
(``stems_opt/formulation/block_floor.py``), against the former scalar search kept in
``tests/reference_block_floor.py``: the same least costs, exactly, for every call the
columns make (and each block's floor shared by intervals alike equal to its own), on
random chains of two equal residual blocks (translates, which share one search) and on
SEW-ResNet-152's intervals at 128 and 256 KB.

Mutations that make these tests fail (each tried, each fails all three): a choice
fitting only with room to spare (``need < room`` in ``_Search.costs``); the
reference's tile counts one fewer below (``-fewer + 1`` in ``_Search._window``); a
translate's placements handed to the shared search unrenamed (``BlockFloors._least``);
intervals sharing a floor whether or not they hold ``X``'s producer (``X``'s choice)
(``BlockFloors._value``'s key). (Leaving ``X``'s last reader out of that key fails
none: in these networks it is the block's reader, which the key holds.)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stems_opt.formulation import block_floor
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.formulation.cpsat import solve_cpsat
from stems_opt.io import load_hardware, load_instance
from stems_opt.problem import Objective, Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_block_floor
from test_optimizer import NEURONS, RANDOM_SETTINGS, make_problem

ROOT = Path(__file__).resolve().parent.parent


def two_blocks(c0: int, h: int, w: int, k_mid: int, f1: int, f2: int,
               neurons: tuple[str, str, str], timesteps: int) -> dict[str, Any]:
    """``p = conv1x1(input)``, then twice ``l1 = conv(x)``, ``l2 = conv(l1)``,
    ``c = add(l2, x)`` (``x`` is ``p``, then the first ``c``): two translated blocks."""
    n_p, n1, n2 = neurons
    layers: list[dict[str, Any]] = [
        {"name": "p", "type": "conv", "inputs": ["input"],
         "loop_dims": {"K": c0, "FY": 1, "FX": 1}, "neuron": n_p}]
    x = "p"
    for b in ("a", "b"):
        layers += [
            {"name": f"{b}1", "type": "conv", "inputs": [x],
             "loop_dims": {"K": k_mid, "FY": f1, "FX": f1}, "neuron": n1},
            {"name": f"{b}2", "type": "conv", "inputs": [f"{b}1"],
             "loop_dims": {"K": c0, "FY": f2, "FX": f2}, "neuron": n2},
            {"name": f"{b}c", "type": "add", "inputs": [f"{b}2", x]}]
        x = f"{b}c"
    return {"name": "blocks", "timesteps": timesteps,
            "input": {"channels": c0, "height": h, "width": w, "bits": 1},
            "layers": layers}


def checked_solver(problem: Problem, monkeypatch: pytest.MonkeyPatch,
                   opened: list[tuple[int, int]] | None = None) -> int:
    """Build the problem's columns (``opened``: these intervals only, after the
    solver's own), every search of a block floor checked against the reference;
    returns how many distinct searches were compared."""
    least = block_floor.BlockFloors._least
    seen: set[tuple] = set()

    def checked(self: block_floor.BlockFloors, item: block_floor.BlockItem,
                present: tuple[int, ...], made_inside: int, axis: Any,
                placed: dict[str, str], wheres: tuple[str, ...], x_choice: bool,
                budget: int) -> tuple[float, float]:
        got = least(self, item, present, made_inside, axis, placed, wheres, x_choice, budget)
        key = (item, present, made_inside, axis, wheres, x_choice, budget)
        if key not in seen:
            seen.add(key)
            ref = reference_block_floor._Search(self.network, item, present, made_inside,
                                                axis, self.k_unroll)
            assert got == ref.least(budget, placed, x_choice), key
        return got

    value = block_floor.BlockFloors._value

    def checked_value(self: block_floor.BlockFloors, item: block_floor.BlockItem,
                      first: int, last: int, whole: frozenset[str], budget: int) -> float:
        got = value(self, item, first, last, whole, budget)
        assert got == self._interval_value(item, first, last, whole, budget), \
            (item, first, last, whole, budget)
        return got

    monkeypatch.setattr(block_floor.BlockFloors, "_least", checked)
    monkeypatch.setattr(block_floor.BlockFloors, "_value", checked_value)
    cs = ColumnSolver(problem, solve_cpsat, SolveOptions(threads=1, seed=0))
    for first, last in opened or ():
        cs.open_interval(first, last)
    return len(seen)


@settings(**{**RANDOM_SETTINGS, "max_examples": 25})
@given(st.data())
def test_random_blocks_agree_with_the_scalar_search(data: st.DataObject) -> None:
    """Every search the columns of two equal random blocks make (every signature and
    budget), shared between the blocks, equals the former search's."""
    d = two_blocks(data.draw(st.integers(1, 3)), data.draw(st.sampled_from([3, 4, 6, 8])),
                   data.draw(st.sampled_from([1, 2, 3])), data.draw(st.integers(1, 3)),
                   data.draw(st.sampled_from([1, 3])), data.draw(st.sampled_from([1, 3])),
                   (data.draw(st.sampled_from(NEURONS)), data.draw(st.sampled_from(NEURONS)),
                    data.draw(st.sampled_from(NEURONS))),
                   data.draw(st.sampled_from([1, 2, 4])))
    p = make_problem(d, data.draw(st.integers(40, 2000)),
                     k_unroll=data.draw(st.sampled_from([1, 4])))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(block_floor, "MIN_LAYERS", 0)
        assert checked_solver(p, monkeypatch) > 0


@pytest.mark.parametrize("size", ["128kb", "256kb"])
def test_sew_resnet152_searches_agree(size: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SEW-ResNet-152 (traffic): the searches of intervals across each stage and its
    transitions, stage 3's translated blocks among them (one search serves them)."""
    base = load_instance(ROOT / "instances" / "sew_resnet152_1mb.yaml")
    hw = load_hardware(ROOT / "models" / "hardware" / f"edge_{size}.yaml")
    p = Problem(base.network, hw, Objective.TRAFFIC, size, (), base.max_segment_layers)
    firsts = (0, 9, 14, 27, 47, 52, 55, 61, 62, 165)
    opened = [(f, f + n) for f in firsts for n in (1, 3, 6, 10, 15)
              if f + n < len(p.network.layers)]
    assert checked_solver(p, monkeypatch, opened) > 100
