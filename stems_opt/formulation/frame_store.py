"""Frame data built once per process and shared by buffer sizes and objectives.

A frame's options (:class:`~stems_opt.formulation.data.Frame`) depend on the
network, the hardware and the objective; the buffer capacity enters in two
places only: an option that alone overflows the buffer is dropped, and a
tensor may be kept whole across segments only when it is smaller than the
buffer (which adds the contexts that read or keep it on chip). So a frame
built for a buffer holds the frame of every smaller buffer:

* the contexts whose whole tensors are candidates at the smaller size;
* per context, the options that fit. Pareto pruning commutes with this
  filter: an option dominated by another is dominated by one that fits
  whenever it fits itself (every coefficient is no larger), and the pruned
  list keeps the generation order;
* contexts in the order in which they first fit, which the builder records
  (:attr:`~stems_opt.formulation.data._FrameBuilder.first_fit`): the order a
  build at that size gives.

A solve takes each frame from the store when it was built for a buffer at
least as large (option for option and in the same order as its own build,
``tests/test_share.py``), else builds it and stores it for its size. The cost
model's terms of a frame's geometry (:meth:`_FrameBuilder.part`) are shared by
every objective and size. Frames are keyed by the network object, the
hardware without its buffer size, the objective (its weights) and the frame;
:func:`shared_network` makes the networks of a sweep one object per distinct
network, so its points share frames and the geometry caches keyed by network.
:func:`clear_frame_store` frees it all.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from stems_opt.formulation.data import (
    CHIP,
    KEEP,
    Frame,
    FrameKey,
    LayerOption,
    _Context,
    _FrameBuilder,
)
from stems_opt.hardware import Hardware
from stems_opt.mapping import Order, StateMode
from stems_opt.network import Network

STORE_GROUPS = 8
"""(Network, hardware, objective) groups kept; the least recently used goes first."""
NETWORKS_KEPT = 16
"""Distinct networks :func:`shared_network` keeps."""

_ContextOptions = tuple[tuple, list[tuple[int, int]], list[LayerOption], list[int]]


@dataclass(frozen=True)
class _SizedFrame:
    """A frame built for one buffer size: per layer, each context with its
    first-fit staircase, its Pareto-pruned options and their largest coefficients."""

    spec: FrameKey
    layers: tuple[str, ...]
    rows: int
    frame_tensors: tuple[str, ...]
    halo_bits: dict[str, int]
    contexts: dict[str, list[_ContextOptions]]


class _Group:
    def __init__(self, network: Network):
        self.network = network  # (held: the key uses its identity)
        self.frames: dict[FrameKey, tuple[int, _SizedFrame | None]] = {}  # by built size
        self.terms: dict[FrameKey, dict[tuple, object]] = {}


_STORE: OrderedDict[tuple, _Group] = OrderedDict()
_NETWORKS: OrderedDict[str, Network] = OrderedDict()
_LOCK = threading.Lock()


def clear_frame_store() -> None:
    """Forget every shared frame, term and network."""
    with _LOCK:
        _STORE.clear()
        _NETWORKS.clear()


def shared_network(network: Network) -> Network:
    """An earlier network equal to ``network`` (same ``repr``: layers, input and
    settings), or ``network`` itself, kept for later calls. Networks compare by
    identity, so the caches keyed by network (frames, tile geometry, loop nests)
    are shared only by the solves given the same object."""
    key = repr(network)
    with _LOCK:
        got = _NETWORKS.get(key)
        if got is None:
            got = _NETWORKS[key] = network
            while len(_NETWORKS) > NETWORKS_KEPT:
                _NETWORKS.popitem(last=False)
        _NETWORKS.move_to_end(key)
        return got


def _hardware_key(hw: Hardware) -> str:
    """The hardware less its name and buffer size."""
    return repr(dataclasses.replace(hw, name="", global_buffer=dataclasses.replace(
        hw.global_buffer, capacity_bits=1)))


def _group(key: tuple, network: Network) -> _Group:
    with _LOCK:
        group = _STORE.get(key)
        if group is None or group.network is not network:
            group = _STORE[key] = _Group(network)
            while len(_STORE) > STORE_GROUPS:
                _STORE.popitem(last=False)
        _STORE.move_to_end(key)
        return group


class FrameStore:
    """The shared frames of one solve's network, hardware and objective."""

    def __init__(self, ctx: _Context):
        self.ctx = ctx
        net = ctx.network
        hw_key = _hardware_key(ctx.hardware)
        self.frames = _group((id(net), hw_key, ctx.objective, ctx.energy_weight,
                              ctx.latency_weight), net).frames
        self.terms = _group((id(net), hw_key), net).terms
        self.built = 0  # frames this solve built (not taken from the store)
        self.build_s = 0.0  # and the time it took

    def frame(self, spec: FrameKey, stop: Callable[[], bool] | None = None) -> Frame | None:
        """The frame ``spec`` as a build at this solve's buffer makes it, or
        ``None`` when some layer fits in no context (or a space-outer frame has
        no tile-resident state). A build that ``stop`` interrupts raises
        :class:`~stems_opt.formulation.data.FrameBuildStoppedError` and stores nothing."""
        cap = self.ctx.capacity_bits
        got = self.frames.get(spec)
        if got is None or got[0] < cap:
            start = time.perf_counter()
            terms = self.terms.setdefault(spec, {})
            got = self.frames[spec] = (cap, _build(self.ctx, spec, terms, stop))
            self.built += 1
            self.build_s += time.perf_counter() - start
        if got[1] is None:
            return None
        return _at_capacity(got[1], cap, self.ctx.whole_candidates)


def _build(ctx: _Context, spec: FrameKey, terms: dict[tuple, object],
           stop: Callable[[], bool] | None = None) -> _SizedFrame | None:
    fb = _FrameBuilder(ctx, *spec, terms=terms)
    options = fb.build(stop)
    if options is None:
        return None
    if spec[5] is Order.SPACE_OUTER and not any(
            o.state is StateMode.TILE_RESIDENT for opts in options.values() for o in opts):
        return None  # (no smaller buffer has one either)
    contexts: dict[str, list[_ContextOptions]] = {}
    for name, opts in options.items():
        groups: dict[tuple, tuple[list[LayerOption], list[int]]] = {}
        for o in opts:
            kept, peaks = groups.setdefault((o.output, o.inputs), ([], []))
            kept.append(o)
            peaks.append(int(o.coeff.max()))
        stairs = fb.first_fit[name]
        contexts[name] = [(key, stairs[key], kept, peaks)
                          for key, (kept, peaks) in groups.items()]
    net = ctx.network
    inside = set(fb.layers)
    frame_tensors = tuple(name for name in fb.layers
                          if any(c in inside for c in net.consumers(name)))
    return _SizedFrame(spec, fb.layers, fb.geo.n * fb.L, frame_tensors, fb.halo_bits(options),
                       contexts)


def _at_capacity(sized: _SizedFrame, capacity_bits: int, whole: dict[str, int]
                 ) -> Frame | None:
    """The frame a build at ``capacity_bits`` (at most the built size) makes."""
    options: dict[str, list[LayerOption]] = {}
    for name in sized.layers:
        picked: list[tuple[int, list[LayerOption]]] = []
        for (out, ins), stairs, kept, peaks in sized.contexts[name]:
            if out.whole and name not in whole:
                continue
            if any(ic.source == CHIP and not ic.in_frame and ic.tensor not in whole
                   for ic in ins):
                continue
            first = next((i for i, peak in stairs if peak <= capacity_bits), None)
            if first is None:
                continue
            picked.append((first, [o for o, peak in zip(kept, peaks, strict=True)
                                   if peak <= capacity_bits]))
        if not picked:
            return None
        picked.sort(key=lambda p: p[0])
        options[name] = [o for _, opts in picked for o in opts]
    first, last, tb, axis, n, order = sized.spec
    if order is Order.SPACE_OUTER and not any(
            o.state is StateMode.TILE_RESIDENT for opts in options.values() for o in opts):
        return None
    halo = {X: sized.halo_bits[X] for X in dict.fromkeys(
        ic.tensor for opts in options.values() for o in opts for ic in o.inputs
        if ic.source == KEEP)}
    return Frame(0, first, last, sized.layers, tb, axis, n, order, options, sized.rows, 0, (),
                 (), sized.frame_tensors, halo)
