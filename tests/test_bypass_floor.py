"""Tensors held on chip past a chunked layer (``stems_opt/formulation/bypass_floor.py``).

The item claims that every segment that fits the buffer and contains its
tensor's maker, its layer and its reader pays, beyond the layer's chunk
floor and the cheap bound, at least the item: in extra reads of the layer's
weights or in the tensor's DRAM traffic. Checked against every segment of
the brute-force space (``tests/brute_force.py``) of a hand-computed case and
of random tiny branches ``a = conv(input)``, ``b = conv(input)``,
``c = add(a, b)`` (the shape of a block's downsample branch: ``a`` is held
past ``b``).

Mutations that make these tests fail (each tried): counting one more row of
``a`` than the add needs (``max(s, f)`` replaced by ``0`` in
``_reader_rows``) fails ``test_margin_case`` (576 > 324, which the brute
force's best segment pays exactly); adding 1 bit to every item's on-chip
side (``gain + 1``) fails ``test_hand_case_is_tight`` and ``test_margin_case``;
charging the write when a later reader may force it (dropping
``item.last_reader <= last`` in ``item_value``) fails
``test_write_only_when_every_reader_is_inside``; charging energy's DRAM reads at
twice the read rate in ``item_value`` fails
``test_energy_items_through_loop_nests_only``.

In energy through loop nests the items count at the DRAM rates: every column
over a, b and c has its cheap bound at most its exact value on the hand case
and on the random branches.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stems_opt.cost.geometry import SegmentGeometry
from stems_opt.cost.traffic import peak_of, segment_terms
from stems_opt.formulation.bypass_floor import BypassFloors, _held_bits, bypass_items
from stems_opt.formulation.chunk_floor import layer_chunk_floors
from stems_opt.formulation.data import frame_axes
from stems_opt.network import Axis
from stems_opt.problem import Problem

sys.path.insert(0, str(Path(__file__).resolve().parent))
import brute_force as bf
from test_bounds import frame_optima, nest_problem, solver_for
from test_optimizer import NEURONS, RANDOM_SETTINGS, make_problem


def branch(c0: int, h: int, w: int, k_a: int, k_b: int, f_a: int, f_b: int,
           neuron_a: str, neuron_b: str, timesteps: int) -> dict[str, Any]:
    """``a = conv(input)``, ``b = conv(input)``, ``c = add(a, b)``."""
    return {"name": "branch", "timesteps": timesteps,
            "input": {"channels": c0, "height": h, "width": w, "bits": 1},
            "layers": [
                {"name": "a", "type": "conv", "inputs": ["input"],
                 "loop_dims": {"K": k_a, "FY": f_a, "FX": f_a}, "neuron": neuron_a},
                {"name": "b", "type": "conv", "inputs": ["input"],
                 "loop_dims": {"K": k_b, "FY": f_b, "FX": f_b}, "neuron": neuron_b},
                {"name": "c", "type": "add", "inputs": ["a", "b"]}]}


# Input 4 x 4 x 4, T = 2; a: 1x1 conv to K 8, spiking with no state; b: 1x1 conv to K 8,
# LIF (12-bit state), |W_b| = 8 * 4 * 4 bits = 128, chunks of 64 (K unrolling 4).
# Per row along OY and timestep: a's and b's outputs 8 * 4 = 32 bits, the input
# 4 * 4 = 16, b's state row 8 * 4 * 12 = 384. At 550 bits b's chunk floor is 384
# (tests/test_chunk_floor.py: Tb = 2, four one-row steps). With a held past b,
# b's step of one row also holds the add's one row of a, 32 Tb: at Tb = 2,
# 64 + 64 + 384 + 32 + 64 = 608 > 550; at Tb = 1, 64 + 32 + 384 + 16 + 32 = 528
# fits, with one row a step (two rows: 64 + 2 * 464 > 550): S q = 2 * 4 = 8 reads,
# 7 * 128 = 896 bits over one read, 512 over the floor. Through DRAM, a is
# written (8 * 16 * 2 = 256 bits) and read by c (256): 512. The item is 512.
HAND = branch(4, 4, 4, 8, 8, 1, 1, "stateless", "lif", 2)
HAND_GB = 550
HAND_ITEM = 512


def draw_branch(data: st.DataObject) -> tuple[dict[str, Any], int]:
    """A random :func:`branch` (b with no state: a state row would dwarf a's rows) and a
    buffer between b's chunk beside its finest step with a's row and beside its whole
    map with a's window, where the item is worth something (K unrolling 1)."""
    d = branch(data.draw(st.integers(1, 3)), data.draw(st.sampled_from([3, 4])),
               data.draw(st.sampled_from([2, 3, 4])), data.draw(st.integers(1, 3)), 1,
               data.draw(st.sampled_from([1, 3])), data.draw(st.sampled_from([1, 3])),
               data.draw(st.sampled_from(NEURONS)),
               data.draw(st.sampled_from(["stateless", "none"])),
               data.draw(st.sampled_from([1, 2])))
    d["layers"][1]["loop_dims"]["K"] = d["layers"][0]["loop_dims"]["K"]  # (add: same K)
    net = make_problem(d, 10 ** 6, k_unroll=1).network
    lay, add = net.layer("b"), net.layer("c")
    chunk = lay.weight_size_bits // lay.k  # (K unrolling 1: K chunks)
    lo = chunk + _held_bits(net, lay, add, "a", Axis.OY, 1, 1)
    hi = chunk + _held_bits(net, lay, add, "a", Axis.OY, lay.extent(Axis.OY), net.timesteps)
    return d, data.draw(st.integers(lo, max(lo, hi)))


def items_of(p: Problem) -> tuple[list[int], BypassFloors]:
    net = p.network
    k_unroll = p.hardware.array.factor("K")
    cap, axes = p.hardware.gb_capacity_bits, frame_axes(net)
    floors = list(layer_chunk_floors(net, cap, k_unroll, axes))
    return floors, BypassFloors(bypass_items(net, cap, k_unroll, axes, floors), 1, 1)


def least_paid(p: Problem) -> tuple[int, int] | None:
    """The least, over the fitting segments over a, b and c (the whole network, one
    segment), of b's weight reads beyond one read and its chunk floor plus a's DRAM
    traffic, and the least traffic of such a segment (``None``: none fits)."""
    net, cap = p.network, p.hardware.gb_capacity_bits
    floors, _ = items_of(p)
    w_b = net.layer("b").weight_size_bits
    space = bf.Space(p)
    runs = (tuple(space.names),)
    if not space._validity(runs):
        return None
    least, total = None, None
    frames: dict[tuple, tuple[SegmentGeometry, dict]] = {}  # one geometry and memo a frame
    for i, ok in enumerate(space._valid[runs[0]]):
        if not ok:
            continue
        seg = space.variants(runs[0])[i]
        key = (seg.time_batch, seg.tiles, seg.axis, seg.order)
        if key not in frames:
            frames[key] = (SegmentGeometry(net, seg), {})
        geo, memo = frames[key]
        terms = segment_terms(net, seg, space.contexts(runs, (i,))[0], geo, memo)
        if peak_of(terms, geo)[0] > cap:
            continue
        paid = sum(t.read_bits - w_b - floors[1] for t in terms
                   if t.tensor_class == "weights" and t.layer == "b")
        paid += sum(t.read_bits + t.write_bits for t in terms
                    if t.tensor_class == "activations" and t.tensor == "a")
        least = paid if least is None else min(least, paid)
        bits = sum(t.read_bits + t.write_bits for t in terms)
        total = bits if total is None else min(total, bits)
    return None if least is None or total is None else (least, total)


def test_hand_case_is_tight() -> None:
    """The item by hand; the brute force's best segment pays it exactly; the column
    solver's cheap bound of the whole network counts it (traffic only) and stays at
    most the best whole segment."""
    p = make_problem(HAND, HAND_GB)
    floors, items = items_of(p)
    assert floors[1] == 384
    assert len(items.items) == 1
    it = items.items[0]
    assert (it.tensor, it.layer, it.reader) == ("a", 1, 2)
    assert it.on_chip_bits == 512 and it.read_bits == 256 and it.write_bits == 256
    assert items.between(0, 2) == HAND_ITEM
    assert items.between(1, 2) == 0  # (a made before the interval: no item)
    got = least_paid(p)
    assert got is not None
    assert got[0] == HAND_ITEM
    cs = solver_for(p)
    assert cs.chunk_floors.between(0, 2) == 384 + HAND_ITEM
    whole = [c.bound for c in cs.columns if (c.first, c.last) == (0, 2)]
    assert whole and min(whole) <= got[1]


def test_write_only_when_every_reader_is_inside() -> None:
    p = make_problem(HAND, HAND_GB)
    _, items = items_of(p)
    it = items.items[0]
    # Were a read again after c, a later segment could force its write: only c's read.
    later = type(it)(it.tensor, it.producer, it.layer, it.reader, 5, False,
                     it.on_chip_bits, it.read_bits, it.write_bits)
    assert items.item_value(later, 2) == 256
    assert items.item_value(later, 5) == 512


def test_energy_items_through_loop_nests_only() -> None:
    """Energy through loop nests counts the items at the DRAM rates (its operand and
    nest floors hold whatever goes through DRAM): the hand item is b's 512 extra weight
    bits at the read rate, less than a's 256 bits written and read (read 10.94 + GB
    write 0.175 pJ per bit, write 11.72 + GB read 0.13). Energy without loop nests has
    none (its per-layer energy floors price the forced steps' GB reads instead)."""
    from stems_opt.problem import Objective

    cs = solver_for(nest_problem(HAND, HAND_GB, 4))
    r_read, r_write = cs.rates[0], cs.rates[1]
    assert (r_read, r_write) == (11_115, 11_850)  # (model units: fJ)
    assert cs.chunk_floors.bypass.between(0, 2) == 512 * r_read < 256 * (r_read + r_write)
    plain = solver_for(make_problem(HAND, HAND_GB, objective=Objective.ENERGY))
    assert plain.chunk_floors.bypass.items == ()


def columns_within_exact(p: Problem) -> int:
    """Assert every column over a, b and c has its cheap bound at most its exact value;
    how many had an item and a fitting frame."""
    cs = solver_for(p)
    compared = 0
    for col in cs.columns:
        if (col.first, col.last) != (0, 2) or cs.chunk_floors.bypass.between(0, 2) <= 0:
            continue
        exact = min((v for _, v in frame_optima(cs, col)), default=None)
        if exact is not None:
            assert col.bound <= exact, (col.sig, col.bound, exact)
            compared += 1
    return compared


def test_hand_case_in_energy_below_exact() -> None:
    assert columns_within_exact(nest_problem(HAND, HAND_GB, 4)) > 0


def test_margin_case() -> None:
    """A 3x3 ``b`` (1 x 4 x 3 input, K 3, T 2, 139 bits, K unrolling 1) where ``a``'s
    window of the add's fewest rows decides: the item is worth something, and the
    brute force's best segment pays at least it (counting one more row of ``a``
    than the add needs would not: ``_reader_rows`` without its slack)."""
    p = make_problem(branch(1, 4, 3, 3, 3, 1, 3, "none", "stateless", 2), 139, k_unroll=1)
    _, items = items_of(p)
    got = least_paid(p)
    assert got is not None
    assert 0 < items.between(0, 2) <= got[0]


@settings(**{**RANDOM_SETTINGS, "max_examples": 12})
@given(st.data())
def test_random_segments_pay_the_item(data: st.DataObject) -> None:
    """Every fitting segment with a, b and c pays b's chunk floor and the item. b has
    no state (a state row would dwarf a's rows) and the buffer is drawn between b's
    chunk beside its finest step with a's row and beside its whole map with a's
    window, where the item is worth something; about a quarter of the draws have one."""
    d, size = draw_branch(data)
    p = make_problem(d, size, k_unroll=1)
    assume(bf.segment_count(p, ("a", "b", "c")) <= 40000)
    _, items = items_of(p)
    got = least_paid(p)
    if got is not None:
        assert got[0] >= items.between(0, 2), (got, items.items)


@settings(**{**RANDOM_SETTINGS, "max_examples": 40})  # (about one draw in six has an item)
@given(st.data())
def test_random_columns_pay_the_item_in_energy(data: st.DataObject) -> None:
    """The random branches of the test above in energy through loop nests: every column
    over a, b and c, its item at the DRAM rates in its cheap bound, is at most its
    exact value (the least local optimum of its frames)."""
    columns_within_exact(nest_problem(*draw_branch(data), 1))
