"""Found segments shared between translated columns (``PrimalMixin.share_found``).

A segment found for one column is offered, renamed, to every column of its shape
key and canonical signature; each takes it only when it fits and the cost model
scores it below the segment it has. Mutations tried: taking the segment when it
scores at least the translate's own (fails ``test_a_better_segment_is_kept``),
the repair marks not moved to the translate's position (fails
``test_translates_take_the_segment_scored_exactly``), scoring without the
tensors the translate's signature writes (fails both). Dropping the capacity
check fails nothing: equal shape keys give equal peaks, the check is a guard.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stems_opt.cost.traffic import SegmentContext
from stems_opt.formulation.primal import segment_value
from stems_opt.mapping import Placement
from stems_opt.solvers import solve

sys.path.insert(0, str(Path(__file__).parent))
from test_optimizer import make_problem
from test_primal import model_value
from test_shapes import block_interval, blocks_net, solver


def plain_block_column(cs, block: int):
    """The column of block ``block`` (c1..add) with every tensor through DRAM."""
    first, last = block_interval(cs, block)
    cs.open_interval(first, last)
    return next(c for c in cs._plain_columns() if (c.first, c.last) == (first, last))


def score(cs, col, seg) -> tuple[float, int]:
    """``seg`` scored by the cost model in ``col``'s context."""
    _, written, _, whole = cs._sig_parts(col)
    dram = {X for X, p in seg.activations.items() if p is Placement.DRAM}
    return segment_value(cs.net, seg, SegmentContext(whole, written | dram), cs.unit_rates)


def test_translates_take_the_segment_scored_exactly() -> None:
    """Block 2's plain column repaired: blocks 3 and 4 (its translates) get the
    segment renamed to their own layers, scored there by the cost model at the
    same value (equal shapes), fitting the buffer, and block 2's repair marks
    moved by one block (3 layers) each."""
    cs = solver(blocks_net(5), 300)
    col = plain_block_column(cs, 2)
    sibs = [plain_block_column(cs, b) for b in (3, 4)]
    assert all(s.share_key == col.share_key for s in sibs)
    assert all(s.upper is None for s in sibs)
    cs.repair_price(col)  # (shares at its end)
    assert col.upper is not None and col.repaired
    for b, sib in zip((3, 4), sibs, strict=True):
        assert sib.upper == col.upper
        names = tuple(lay.name for lay in cs.net.layers[sib.first:sib.last + 1])
        assert sib.segment.layers == names == (f"b{b}_c1", f"b{b}_c2", f"b{b}_add")
        value, peak = score(cs, sib, sib.segment)
        assert value == sib.upper and peak <= cs.ctx.capacity_bits
        d = sib.first - col.first
        assert d == 3 * (b - 2)
        assert {(m[0] + d, m[1] + d, *m[2:]) for m in col.repaired} <= sib.repaired


def test_a_better_segment_is_kept() -> None:
    """A translate whose own segment is better keeps it; one with none takes the
    shared one; sharing the same value twice changes nothing."""
    cs = solver(blocks_net(5), 300)
    col = plain_block_column(cs, 2)
    better, empty = plain_block_column(cs, 3), plain_block_column(cs, 4)
    cs.repair_price(better)  # block 3 first: shared to blocks 2 and 4
    assert col.upper == better.upper == empty.upper is not None
    own = better.segment
    better.upper -= 1  # (as if block 3 had a better segment)
    empty.upper, empty.segment = None, None
    cs._found_shared.clear()
    assert cs.share_found(col) == 1  # block 4 only
    assert better.segment is own and better.upper == col.upper - 1
    assert empty.upper == col.upper
    assert cs.share_found(col) == 0


def test_solves_with_shared_segments_are_exact_and_deterministic() -> None:
    """Two proofs with one seed: the mapping is scored by the cost model at the
    returned value, both return one mapping, and segments were shared."""
    p = make_problem(blocks_net(6), 300, 4)
    runs = [solve(p, "cpsat", threads=1, seed=0) for _ in range(2)]
    for r in runs:
        assert r.status.value == "optimal", r.message
        assert model_value(p, r.mapping) == r.objective_value
    assert runs[0].mapping == runs[1].mapping
    assert runs[0].stats.get("found_shared", 0) > 0
