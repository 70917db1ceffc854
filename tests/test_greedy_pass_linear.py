"""The named schedules' greedy pass (:func:`stems_opt.heuristics.named.greedy_pass`)
against its former quadratic version, kept here as the oracle.

The pass re-derives only the contexts of the switched tensor's segments and
skips refitting segments known to be their own refit; none of that may change
a single decision. Every named schedule (its tile choice runs the pass for many
tile counts) must be the same mapping with either pass, on the bundled tiny
instances and SEW-ResNet-18 under several global-buffer sizes, and on chains
with skip connections. (Deriving no context change at all, ``_context_changes``
returning ``{}``, makes nine of these problems fail.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stems_opt.cost.traffic import SegmentContext, mapping_contexts
from stems_opt.heuristics import named
from stems_opt.io import hardware_from_dict, load_instance, network_from_dict
from stems_opt.mapping import Mapping, Order, Segment, StateMode
from stems_opt.problem import Objective, Problem

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from test_optimizer import hardware_dict  # noqa: E402


def quadratic_greedy_pass(problem: Problem, scorer: named.Scorer, segs: list[Segment],
                          only_local: bool, ctx: SegmentContext | None = None
                          ) -> list[Segment]:
    """The pass as it was: every candidate re-derives every context, refits every
    segment for an ``inputs`` switch and sums every score."""
    net = problem.network
    T = net.timesteps
    segs = list(segs)
    if only_local:
        assert ctx is not None
        ctxs = [ctx]
    else:
        ctxs = mapping_contexts(net, Mapping(tuple(segs)))
    scores = [scorer.segment(s, c) for s, c in zip(segs, ctxs, strict=True)]
    traffic = sum(s[0] for s in scores)
    for idx, change in scorer.switches(segs):
        if only_local and "inputs" in change:
            continue
        options = [change]
        if "states" in change:
            name = next(iter(change["states"]))  # type: ignore[call-overload]
            if named._tile_resident_ok(segs[idx], T):
                options.append({"states": {name: StateMode.TILE_RESIDENT},
                                "order": Order.SPACE_OUTER})
        for opt in options:
            cands = list(segs)
            cands[idx] = cands[idx].replace(**opt)
            new_ctxs = ctxs
            if not only_local and ("activations" in opt or "inputs" in opt):
                new_ctxs = mapping_contexts(net, Mapping(tuple(cands)))
            touched = range(len(cands)) if "inputs" in opt else (idx,)
            new_scores = list(scores)
            for i in touched:
                cands[i], new_scores[i] = scorer.fit(cands[i], new_ctxs[i])
            if new_ctxs is not ctxs and "inputs" not in opt:
                for i, (c_new, c_old) in enumerate(zip(new_ctxs, ctxs, strict=True)):
                    if i != idx and c_new != c_old:
                        new_scores[i] = scorer.segment(cands[i], c_new)
            new_traffic = sum(s[0] for s in new_scores)
            if new_traffic < traffic and all(s[1] <= scorer.cap for s in new_scores):
                segs, ctxs, scores, traffic = cands, new_ctxs, new_scores, new_traffic
                break
    return segs


def skip_chain(layers: int, skip: int) -> dict:
    """A chain of LIF 3x3 convs where every ``skip``-th layer also adds the output
    from ``skip`` layers back (tensors read by later segments: the ``inputs``
    switches and contexts spanning several segments)."""
    out = []
    for i in range(layers):
        prev = "input" if i == 0 else f"c{i - 1}"
        out.append({"name": f"c{i}", "type": "conv", "inputs": [prev],
                    "loop_dims": {"K": 4, "FY": 3, "FX": 3}, "neuron": "lif"})
        if i >= skip and i % skip == 0:
            out[-1] = {"name": f"c{i}", "type": "add", "inputs": [prev, f"c{i - skip}"]}
    return {"name": f"skip{layers}_{skip}", "timesteps": 2,
            "input": {"channels": 4, "height": 8, "width": 8, "bits": 1}, "layers": out}


def problems() -> list[Problem]:
    out = []
    for name in ("tiny_chain", "tiny_residual", "tiny_reset", "tiny_ann_snn", "tiny_linear"):
        base = load_instance(ROOT / "instances" / f"{name}.yaml")
        for size in (2_000, 20_000, 200_000):
            out.append(Problem(base.network, hardware_from_dict(hardware_dict(size)),
                               Objective.TRAFFIC, f"{name}@{size}"))
    base = load_instance(ROOT / "instances" / "sew_resnet18_1mb.yaml")
    for kb in (128, 1024):
        hw = hardware_from_dict(hardware_dict(kb * 8 * 1024))
        out.append(Problem(base.network, hw, Objective.TRAFFIC, f"sew_resnet18@{kb}kb"))
    for layers, skip in ((12, 2), (20, 3)):
        net = network_from_dict(skip_chain(layers, skip))
        for size in (3_000, 30_000):
            out.append(Problem(net, hardware_from_dict(hardware_dict(size)), Objective.TRAFFIC,
                               f"skip{layers}_{skip}@{size}"))
    return out


@pytest.mark.parametrize("problem", problems(), ids=lambda p: p.name)
def test_named_schedules_are_those_of_the_quadratic_pass(
        problem: Problem, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = {name: named.named_schedule(problem, name).mapping for name in named.NAMED}
    monkeypatch.setattr(named, "greedy_pass", quadratic_greedy_pass)
    for name in named.NAMED:
        assert named.named_schedule(problem, name).mapping == fast[name], name
