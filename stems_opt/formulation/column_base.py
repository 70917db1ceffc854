"""What the parts of the column solver share: constants, signatures and columns."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from stems_opt.formulation.backend import BackendAnswer, SolveOptions
from stems_opt.formulation.data import (
    Frame,
    FrameKey,
    LayerOption,
    interval_specs,
)
from stems_opt.formulation.model import LinearModel
from stems_opt.mapping import Segment
from stems_opt.network import Axis, Network

LOG = logging.getLogger("stems_opt.columns")
PRIMAL_FRAMES = 2
"""Frames of a column repaired per call of :meth:`ColumnSolver.repair_price`."""
REPAIR_TRIES = 6
"""Frames tried per frame to repair, when the greedy cannot fit some."""
DIVE_SHARE = 0.1
"""Share of the time limit the dive may take before the exact search."""
DIVE_NONE_SHARE = 0.5
"""Share of the time limit the dive may take while it has found no mapping at all."""
DIVE_IMPROVING_SHARE = 0.4
"""Share of the time limit the dive may take while its mapping keeps improving (each
``DIVE_ASK_S``): under a time limit the mapping matters more than an early bound."""
DIVE_IMPROVING_SHARE_SEEDED = 0.2
"""The same share when another search seeds this one as it goes (the energy search
through loop nests under a short limit: :func:`stems_opt.solvers.coarse_seed`): its
mappings stand in for the dive's, and the exact loop's bound gains the time
(SEW-ResNet-18 energy at 10 s, idle cores: 128 KB gap 4.6 and 5.0 % against 29 and
36 %, 256 KB proven in 8.9 s against 1.6 % left; the same mappings)."""
DIVE_IMPROVING_CAP_S = 10.0
"""At most this many seconds of dive while its mapping keeps improving: past it the
neighbourhood turns go on improving it beside the proof (SEW-ResNet-152 at 512 KB
spent 48 s of a 120 s limit in the dive, which left its proof 10 s to spare)."""
DIVE_ASK_S = 1.0
"""Seconds between the dive's checks for a first mapping once its share has passed."""
DIVE_CAP_S = 30.0
"""Without a time limit, the dive stops after ``DIVE_SHARE`` of this."""
DIVE_ANYTIME_UP_TO_S = 60.0
"""The shares above apply under time limits up to this many seconds; under longer ones
the dive is that of a search without a limit: such a limit is better spent on the
proof, and the dive that goes on while its mapping improves (up to
``DIVE_IMPROVING_CAP_S``) delayed it. Proof times at ``--time-limit 180`` on idle
cores, before / after: SEW-ResNet-18 energy at 1 MB 16.1 / 8.1 s, at 128 KB 24.9 /
12.8 s; RED-LIF energy at 256 KB 36.1 / 21.8 s; SEW-ResNet-152 energy at 128 KB (limit
240) 102.3 / 82.5 s; SEW-ResNet-152 traffic, slower at three of four sizes but within
its target: 256 KB 53.3 / 55.8 s, 512 KB 12.8 / 14.8 s, 1 MB 7.7 / 11.0 s, 2 MB 7.8 /
5.6 s."""
LOCAL_LIMIT_S = 2.0
"""First time limit of a frame's local solve; a frame left open is retried with 8x more."""
TIE_BATCH = 400
"""Columns on paths tied with the master's tightened together (:meth:`ColumnSolver.master_ties`)."""
TIE_S = 3.0
"""Seconds the tied columns of one round may take (the rest wait for the next round)."""
TIE_SHARE = 0.25
"""Share of the search so far that tightening tied columns may have taken in all."""
COLUMN_BUDGET = 100_000
"""Columns built up front at most: intervals are opened by length, shortest first, while
their columns fit; longer intervals are opened when the proof needs them."""
EAGER_LAYERS = 100
"""Deeper networks start from their one-layer intervals even when the budget allows
more: the dive's first mapping comes before the seconds it takes to build the rest."""
SHARE_SHAPES = True
"""Columns of intervals equal up to names share their bounds, exact values and segments
(:mod:`stems_opt.formulation.shapes`); off only to compare."""
EXCLUDED_REFRESH_S = 1.0
"""Seconds between recomputations of the bound on mappings through unopened intervals."""
Backend = Callable[[LinearModel, SolveOptions, dict[int, int] | None], BackendAnswer]


def on_ladder(n: int) -> bool:
    """Tile counts the dive samples and the first segments try: 1, 2, 3, 4, 6, 8, 12, 16,
    24, ..."""
    while n > 4 and n % 2 == 0:
        n //= 2
    return n <= 4


class FrameSpecs(dict):
    """The frames of each interval ``(first, last)``, listed when first asked for."""

    def __init__(self, network: Network, axes: tuple[Axis, ...]):
        super().__init__()
        self.network, self.axes = network, axes

    def __missing__(self, key: tuple[int, int]) -> list[FrameKey]:
        specs = self[key] = interval_specs(self.network, key[0], key[1], self.axes)
        return specs


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: building columns allocates a few
    objects per column and none in cycles, and the collections the allocations
    trigger would walk every column built so far, again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class MasterStoppedError(Exception):
    """The master stopped (time limit) before finding any answer."""

    def __init__(self, bound: float | None):
        super().__init__("master stopped")
        self.bound = bound


@dataclass(frozen=True)
class Signature:
    """How an interval meets the rest of the mapping.

    ``whole_in``: (tensor, kept whole) for each tensor crossing the start;
    ``outputs``: (tensor, whole after, written for a later DRAM reader).
    """

    whole_in: tuple[tuple[str, bool], ...]
    outputs: tuple[tuple[str, bool, bool], ...]


@dataclass
class Column:
    """An interval with a signature, priced by a bound or exactly."""

    first: int
    last: int
    sig: Signature
    bound: float
    exact: bool = False
    value: float | None = None  # exact value, None when no frame fits
    upper: float | None = None  # best value found so far (a feasible segment)
    frame: Frame | None = None
    chosen: dict[str, LayerOption] = field(default_factory=dict)
    tried: set[FrameKey] = field(default_factory=set)
    unproven: dict[FrameKey, float] = field(default_factory=dict)  # frame -> its bound
    attempts: dict[FrameKey, int] = field(default_factory=dict)
    tight: bool = False  # frame bounds include what the buffer forces
    covered: bool = False  # ... and one decision per item across rows (item_cover.py)
    frame_bounds: dict[FrameKey, float] = field(default_factory=dict)
    frame_slack: dict[FrameKey, int] = field(default_factory=dict)
    segment: Segment | None = None  # found directly, without a frame model
    repaired: set[FrameKey] = field(default_factory=set)  # frames given a greedy segment
    rank: int = 0  # build order, for deterministic ties in the master
    # (shape key, canonical signature): columns with equal ones have equal bounds and
    # values (shapes.py)
    share_key: tuple | None = None

    @property
    def price(self) -> float:
        """The value the master uses: exact, else a lower bound."""
        return self.value if self.exact and self.value is not None else self.bound
