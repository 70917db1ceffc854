"""The cost model: off-chip traffic, global-buffer occupancy, energy and latency.

The referee of every solver, in layers that import only downwards:

- :mod:`~stems_opt.cost.geometry`: tile and sub-tile row bounds, input windows, halos;
- :mod:`~stems_opt.cost.traffic`: one :class:`Term` per decision (DRAM bits and
  GB occupancy), a segment's terms, the segments' contexts, compulsory traffic;
- :mod:`~stems_opt.cost.loops`: the intra-layer loop nests and their optima;
- :mod:`~stems_opt.cost.energy`: energy rates and operand energy per level;
- :mod:`~stems_opt.cost.latency`: cycles of every layer step (compute, ports, DRAM);
- :mod:`~stems_opt.cost.evaluation`: :func:`evaluate`, a mapping's :class:`Cost`.

The formulas are written out in ``docs/model.md``. No solver is imported here.
"""

from stems_opt.cost.energy import EnergyRates, energy_by_level, pj_to_fj
from stems_opt.cost.evaluation import Cost, SegmentCost, evaluate
from stems_opt.cost.geometry import SegmentGeometry, sub_tile_limits, tile_bounds
from stems_opt.cost.latency import LayerLatency, segment_latency
from stems_opt.cost.traffic import (
    TENSOR_CLASSES,
    SegmentContext,
    Term,
    TrafficBreakdown,
    compulsory_traffic_bits,
    mapping_contexts,
    segment_terms,
)

__all__ = [
    "TENSOR_CLASSES", "Cost", "EnergyRates", "LayerLatency", "SegmentContext", "SegmentCost",
    "SegmentGeometry", "Term", "TrafficBreakdown", "compulsory_traffic_bits", "energy_by_level",
    "evaluate", "mapping_contexts", "pj_to_fj", "segment_latency", "segment_terms",
    "sub_tile_limits", "tile_bounds",
]
