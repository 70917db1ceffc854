"""Shape keys (``stems_opt/formulation/shapes.py``) and the work translated intervals share
(``column_bounds.py``, ``column_share.py``).

* Translated intervals of a chain of identical residual blocks have equal keys,
  their signatures correspond one to one, and a segment translated there and
  back is the segment.
* One case per attribute the key must see: changing it in one block (a kernel,
  the neuron model, the state width, the weight width, a tensor read after the
  interval, a network output, an internal edge, the size of a tensor passing
  through, the kind of layer that makes a crossing tensor) makes the keys of
  that block's intervals differ from the translate's.
  Mutations these catch: a key without the readers' offsets and the
  ``read after`` flags (the boundary relation) fails ``read_later`` and
  ``network_output``-free cases ``read_later``; a key whose tensors record only
  their readers (no producer, no sizes) fails ``pass_through_size`` and
  ``crossing_made_by``; a key without the layers' fields fails ``kernel``,
  ``neuron`` and the widths.
* Tightened bounds looked up by shape equal the bounds computed for the column
  itself, on every column of a repeated-block problem.
* Solves with sharing on and off prove the same optimum with both backends, with
  columns shared and none rejected, and the optimum of a chain of three equal
  convs is the brute-force one.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from stems_opt.formulation import column_base
from stems_opt.formulation.backend import SolveOptions
from stems_opt.formulation.columns import ColumnSolver
from stems_opt.formulation.shapes import ShapeIndex
from stems_opt.io import network_from_dict
from stems_opt.mapping import RESIDENT, Halo, Order, Placement, Segment, StateMode
from stems_opt.network import Axis, Network
from stems_opt.problem import Objective
from stems_opt.solvers import _backend, solve

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf
from test_optimizer import make_problem

UNLIMITED = 1 << 30


def blocks_net(blocks: int = 4, change: dict[int, dict[str, dict[str, Any]]] | None = None,
               tap: str | None = None, outputs: tuple[str, ...] = (),
               skip_from_first: int | None = None, timesteps: int = 2,
               side: int = 4) -> dict[str, Any]:
    """A stem conv and ``blocks`` residual blocks ``b{i}_c1`` -> ``b{i}_c2`` ->
    ``b{i}_add`` (the add reads the block's input). ``change[i][layer]`` updates a
    layer's spec in block ``i``; ``tap`` is a layer read by a last 1x1 conv
    (so its output is read after its block); ``skip_from_first``: block ``i``'s add
    reads its ``c1`` instead of the block input."""
    change = change or {}
    layers: list[dict[str, Any]] = [
        {"name": "stem", "type": "conv", "inputs": ["input"],
         "loop_dims": {"K": 2, "FY": 3, "FX": 3}, "neuron": "lif"}]
    prev = "stem"
    for i in range(1, blocks + 1):
        c1 = {"name": f"b{i}_c1", "type": "conv", "inputs": [prev],
              "loop_dims": {"K": 2, "FY": 3, "FX": 3}, "neuron": "lif"}
        c2 = {"name": f"b{i}_c2", "type": "conv", "inputs": [f"b{i}_c1"],
              "loop_dims": {"K": 2, "FY": 3, "FX": 3}, "neuron": "lif"}
        res = f"b{i}_c1" if skip_from_first == i else prev
        add = {"name": f"b{i}_add", "type": "add", "inputs": [res, f"b{i}_c2"]}
        for lay in (c1, c2, add):
            for k, v in change.get(i, {}).get(lay["name"].split("_")[1], {}).items():
                lay[k] = {**lay.get(k, {}), **v} if isinstance(v, dict) else v
        layers += [c1, c2, add]
        prev = f"b{i}_add"
    if tap is not None:
        layers.append({"name": "tap", "type": "conv", "inputs": [tap], "loop_dims": {"K": 2},
                       "neuron": "lif"})
    net: dict[str, Any] = {
        "name": "blocks", "timesteps": timesteps,
        "input": {"channels": 2, "height": side, "width": side, "bits": 1},
        "layers": layers}
    if outputs:
        net["outputs"] = list(outputs)
    return net


def solver(network: dict[str, Any] | Network, size: int = UNLIMITED,
           objective: Objective = Objective.TRAFFIC, share: bool = True) -> ColumnSolver:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(column_base, "SHARE_SHAPES", share)
        return ColumnSolver(make_problem(network, size, 4, objective), _backend("cpsat"),
                            SolveOptions(threads=1))


def block_interval(cs: ColumnSolver, block: int, lo: str = "c1", hi: str = "add"
                   ) -> tuple[int, int]:
    return cs.net.index(f"b{block}_{lo}"), cs.net.index(f"b{block}_{hi}")


def key(cs: ColumnSolver, first: int, last: int) -> object:
    return cs.shapes.shape(first, last).key


def test_translated_intervals_share_keys_and_signatures() -> None:
    """Every interval starting in block 2 has the key of its translate by one block
    (3 layers) when it ends before the last block, and their signatures correspond:
    the same canonical signatures, in the same order."""
    cs = solver(blocks_net(5))
    start, _ = block_interval(cs, 2)
    checked = 0
    for first in range(start, start + 3):
        for last in range(first, first + 6):
            a, b = cs.shapes.shape(first, last), cs.shapes.shape(first + 3, last + 3)
            assert a.key == b.key
            sa = [ShapeIndex.signature(a, s) for s in cs.signatures(first, last)]
            sb = [ShapeIndex.signature(b, s) for s in cs.signatures(first + 3, last + 3)]
            assert sa == sb
            checked += 1
    assert checked == 18
    # Not a translate: block 1 reads the stem (a conv), block 2 an add.
    assert key(cs, *block_interval(cs, 1)) != key(cs, *block_interval(cs, 2))
    # Different lengths, same start.
    f, _ = block_interval(cs, 2)
    assert key(cs, f, f + 1) != key(cs, f, f + 2)


def test_segments_translate_there_and_back() -> None:
    """A segment of block 2 renamed to block 3 names block 3's layers and tensors, and
    renamed back is the segment."""
    cs = solver(blocks_net(4))
    a, b = cs.shapes.shape(*block_interval(cs, 2)), cs.shapes.shape(*block_interval(cs, 3))
    seg = Segment(("b2_c1", "b2_c2", "b2_add"), 1, 2, Axis.OY, Order.TIME_OUTER,
                  sub_tiles={"b2_c1": 2, "b2_add": 1}, weights={"b2_c2": RESIDENT},
                  states={"b2_c1": StateMode.RESIDENT},
                  activations={"b2_c1": Placement.ON_CHIP, "b2_c2": Placement.DRAM},
                  inputs={"b1_add": Placement.DRAM}, halos={"b1_add": Halo.KEEP})
    moved = ShapeIndex.translate(seg, a, b)
    assert moved == Segment(("b3_c1", "b3_c2", "b3_add"), 1, 2, Axis.OY, Order.TIME_OUTER,
                            sub_tiles={"b3_c1": 2, "b3_add": 1}, weights={"b3_c2": RESIDENT},
                            states={"b3_c1": StateMode.RESIDENT},
                            activations={"b3_c1": Placement.ON_CHIP, "b3_c2": Placement.DRAM},
                            inputs={"b2_add": Placement.DRAM}, halos={"b2_add": Halo.KEEP})
    assert ShapeIndex.translate(moved, b, a) == seg
    # A name the shape does not know: no translation.
    assert ShapeIndex.translate(dataclasses.replace(seg, halos={"stem": Halo.KEEP}), a, b) is None


def _pass_through_bigger() -> Network:
    """``blocks_net(4)`` with block 2's add output 4-bit (block 3's ``c2`` interval then
    has a bigger tensor passing through it than block 2's: nothing else differs
    inside; the readers' widths are left as they were, only the key is looked at)."""
    net = network_from_dict(blocks_net(4))
    layers = tuple(dataclasses.replace(lay, output_bits=4) if lay.name == "b2_add" else lay
                   for lay in net.layers)
    return dataclasses.replace(net, layers=layers)


# name: (network, block whose intervals must differ from block 2's, (lo, hi) layers)
ATTRIBUTES: dict[str, tuple[dict[str, Any] | Network, tuple[str, str]]] = {
    "kernel": (blocks_net(4, {3: {"c1": {"loop_dims": {"FY": 1, "FX": 1}}}}), ("c1", "add")),
    "neuron": (blocks_net(4, {3: {"c2": {"neuron": "if"}}}), ("c1", "add")),
    "state_width": (blocks_net(4, {3: {"c2": {"operand_precision": {"V": 8}}}}), ("c1", "add")),
    "weight_width": (blocks_net(4, {3: {"c1": {"operand_precision": {"W": 8}}}}), ("c1", "add")),
    "read_later": (blocks_net(4, tap="b3_c1"), ("c1", "c2")),
    "network_output": (blocks_net(4, outputs=("b3_c2", "b4_add")), ("c1", "c2")),
    "internal_edge": (blocks_net(4, skip_from_first=3), ("c1", "add")),
    "pass_through_size": (_pass_through_bigger(), ("c2", "c2")),
}


@pytest.mark.parametrize("attribute", list(ATTRIBUTES))
def test_a_changed_attribute_changes_the_key(attribute: str) -> None:
    """Block 3 differs from block 2 in one attribute: the key of its interval differs
    from block 2's; in the network without the change the two are equal."""
    network, (lo, hi) = ATTRIBUTES[attribute]
    cs = solver(network)
    assert key(cs, *block_interval(cs, 2, lo, hi)) != key(cs, *block_interval(cs, 3, lo, hi))
    plain = solver(blocks_net(4))
    assert key(plain, *block_interval(plain, 2, lo, hi)) == \
        key(plain, *block_interval(plain, 3, lo, hi))


def test_crossing_tensor_made_by_another_kind_of_layer() -> None:
    """Block 1's ``c2`` interval has the stem (a conv) passing through, block 2's an
    add: the same layers inside, different keys."""
    cs = solver(blocks_net(4))
    one, two = block_interval(cs, 1, "c2", "c2"), block_interval(cs, 2, "c2", "c2")
    assert key(cs, *one) != key(cs, *two)


def test_sharing_off_gives_every_interval_its_own_key() -> None:
    cs = solver(blocks_net(4), share=False)
    assert key(cs, *block_interval(cs, 2)) != key(cs, *block_interval(cs, 3))


@pytest.mark.parametrize("size,objective", [(1200, Objective.TRAFFIC), (700, Objective.TRAFFIC),
                                            (900, Objective.ENERGY)])
def test_tightened_bounds_by_shape_equal_each_columns_own(size: int,
                                                          objective: Objective) -> None:
    """Every column tightened with sharing (most bounds looked up from a translate)
    has the frame bounds, slacks and bound of the same column tightened without."""
    on, off = solver(blocks_net(4), size, objective), \
        solver(blocks_net(4), size, objective, share=False)
    assert len(on.columns) == len(off.columns)
    for a, b in zip(on.columns, off.columns, strict=True):
        assert (a.first, a.last, a.sig) == (b.first, b.last, b.sig)
        on.tighten(a)
        off.tighten(b)
        assert a.frame_bounds == b.frame_bounds
        assert a.frame_slack == b.frame_slack
        assert (a.bound, a.exact, a.value) == (b.bound, b.exact, b.value)
        assert on.interval_frame_bounds(a.first, a.last) == \
            off.interval_frame_bounds(b.first, b.last)
    # The bounds were shared: fewer distinct entries than without.
    assert len(on.cap_bounds) < len(off.cap_bounds)


def _solve(network: dict[str, Any], size: int, objective: Objective, backend: str,
           share: bool) -> tuple[float | None, dict]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(column_base, "SHARE_SHAPES", share)
        r = solve(make_problem(network, size, 4, objective), backend, threads=1, seed=0)
    assert r.status.value in ("optimal", "infeasible"), r.message
    return r.objective_value, r.stats


@pytest.mark.parametrize("blocks,size,objective", [
    (4, 300, Objective.TRAFFIC), (5, 400, Objective.TRAFFIC), (4, 500, Objective.ENERGY)])
def test_sharing_on_and_off_prove_the_same_optimum(blocks: int, size: int,
                                                   objective: Objective) -> None:
    """Both backends with sharing and CP-SAT without: one optimum; with sharing,
    columns were shared and no shared value was rejected by the cost model."""
    network = blocks_net(blocks)
    values = set()
    shared = 0
    for backend, share in (("cpsat", True), ("highs", True), ("cpsat", False)):
        value, stats = _solve(network, size, objective, backend, share)
        values.add(value)
        assert stats.get("shares_rejected", 0) == 0
        if share:
            shared += stats.get("columns_shared", 0)
        else:
            assert stats.get("columns_shared", 0) == 0
    assert len(values) == 1 and None not in values
    assert shared > 0


def tiny_chain(n: int = 3, side: int = 2) -> dict[str, Any]:
    """``n`` equal 1x1 stateless convs (K = 1) on a 1 x side x side input, T = 1."""
    layers, prev = [], "input"
    for i in range(n):
        layers.append({"name": f"c{i}", "type": "conv", "inputs": [prev],
                       "loop_dims": {"K": 1}, "neuron": "stateless"})
        prev = f"c{i}"
    return {"name": "tiny_chain", "timesteps": 1,
            "input": {"channels": 1, "height": side, "width": side, "bits": 1},
            "layers": layers}


@pytest.mark.parametrize("size", [7, 8, 9, 10, 12])
def test_tiny_chain_brute_force(size: int) -> None:
    """Three equal convs (50,976 mappings, its frontier: peaks 8, 10 and 12 bits at
    32, 28 and 20 bits of traffic): the brute-force optimum (every mapping
    enumerated, tests/brute_force.py), proven with sharing by both backends
    (infeasible below 8 bits)."""
    p = make_problem(tiny_chain(), size, 4)
    want, _, count = bf.brute_force_optimum(p, fast=True)
    assert count == 50_976
    for backend in ("cpsat", "highs"):
        r = solve(p, backend, threads=1, seed=0)
        if want is None:
            assert r.status.value == "infeasible"
            continue
        assert r.status.value == "optimal", r.message
        assert r.objective_value == want


def test_same_seed_same_mapping_with_sharing() -> None:
    """Two solves with the same seed return the same mapping (shared values are taken in
    a fixed order)."""
    p = make_problem(blocks_net(4), 300, 4)
    a, b = (solve(p, "cpsat", threads=1, seed=0) for _ in range(2))
    assert a.stats["columns_shared"] > 0
    assert a.mapping == b.mapping and a.objective_value == b.objective_value
