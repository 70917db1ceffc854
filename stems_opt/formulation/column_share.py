"""Exact column values shared between intervals equal up to names.

A column priced exactly gives its value, and its segment translated to the
other interval's names, to every column with the same shape key and
canonical signature (:mod:`stems_opt.formulation.shapes`). The translated
segment is scored by the cost model in the other column's own context and
taken only when it fits and scores exactly the shared value, so every
mapping built from shared columns is scored exactly as the cost model
scores it. (The value's proof, that no frame does better, is the key's:
the two columns have the same frames with the same costs.)

A part of :class:`stems_opt.formulation.columns.ColumnSolver` (``docs/solver.md``).
"""

from __future__ import annotations

from stems_opt.formulation.column_base import LOG, Column
from stems_opt.formulation.model import segment_of
from stems_opt.formulation.shapes import ShapeIndex
from stems_opt.mapping import Segment


class ShareMixin:
    """Exact values shared between translated columns (a mixin of ``ColumnSolver``)."""

    def _found_segment(self, col: Column) -> Segment | None:
        """The segment behind ``col``'s best value found (``None``: none found)."""
        if col.segment is not None:
            return col.segment
        if col.frame is not None:
            return segment_of(col.frame, col.chosen)
        return None

    def share_exact(self, col: Column) -> None:
        """Offer ``col``'s exact value to the columns of its shape and signature not
        priced yet (each takes it when the translated segment scores it)."""
        key = col.share_key
        if key is None or not col.exact or key in self._shared_prices:
            return
        seg = None if col.value is None else self._found_segment(col)
        if col.value is not None and seg is None:
            return
        self._shared_prices[key] = (col.value, (col.first, col.last), seg)
        for sib in self._siblings.get(key, ()):
            if sib is not col and not sib.exact and self.take_shared(sib):
                self.touch(sib)

    def take_shared(self, col: Column) -> bool:
        """Give ``col`` the exact value of a translated column priced before, when
        there is one and its segment, renamed, scores that value here; ``True``
        when ``col`` is now exact."""
        entry = None if col.share_key is None else self._shared_prices.get(col.share_key)
        if entry is None:
            return False
        value, (first, last), seg = entry
        if value is None:  # no frame fits under the signature: none of the translate's
            col.exact, col.value = True, None
            self.stats["columns_shared"] += 1
            return True
        assert seg is not None
        moved = ShapeIndex.translate(seg, self.shapes.shape(first, last),
                                     self.shapes.shape(col.first, col.last))
        if moved is None:
            return False
        score, peak = self.score_in(col, moved)
        if score != value or peak > self.ctx.capacity_bits:
            # (A key too coarse would show here first: price the column itself.)
            LOG.warning("shared value of %d..%d rejected at %d..%d: %s scores %s, peak %d",
                        first, last, col.first, col.last, value, score, peak)
            self.stats["shares_rejected"] += 1
            return False
        col.exact, col.value, col.upper = True, score, score
        col.segment, col.frame, col.chosen = moved, None, {}
        self.stats["columns_shared"] += 1
        return True
