"""The named baselines are as strong as their rules allow: the default tile counts
of the fused blocks minimise the whole schedule's objective among the counts that
fit (docs/model.md section 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stems_opt.cost.traffic import compulsory_traffic_bits
from stems_opt.heuristics import named_schedule, parse_schedule
from stems_opt.io import load_instance
from stems_opt.network import Axis
from stems_opt.problem import Objective

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("instance", ["sew_resnet18_1mb", "sew_resnet18_5plif_1mb"])
def test_tb_f_reaches_the_compulsory_traffic(instance: str) -> None:
    # SEW-ResNet-18 at 1 MB: --tiles 16,16,16,8,4,2,1 fits and moves only the compulsory
    # traffic (99,576,320 bits; 11,495,936 with 5 PLIF layers), which no mapping undercuts;
    # the default counts must find such a schedule (per-block choices gave 107,964,928 and
    # 19,884,544 bits).
    problem = load_instance(ROOT / "instances" / f"{instance}.yaml")
    result = named_schedule(problem, "TB-F")
    assert result.feasible
    assert result.cost.traffic_bits == compulsory_traffic_bits(problem.network)


@pytest.mark.parametrize("objective", [Objective.TRAFFIC, Objective.ENERGY],
                         ids=lambda o: o.value)
def test_tb_f_tiles_are_a_local_optimum(objective: Objective) -> None:
    # No change of one block's tile count (over the powers of two up to its extent)
    # gives a schedule that fits with a lower objective.
    problem = load_instance(ROOT / "instances" / "sew_resnet18_1mb.yaml").with_objective(
        objective)
    net = problem.network
    best = named_schedule(problem, "TB-F")
    assert best.feasible
    tiles = [seg.tiles for seg in best.mapping.segments]
    frames = parse_schedule("TB-F", net)
    assert [f.layers for f in frames] == [seg.layers for seg in best.mapping.segments]
    tried = 0
    for i, frame in enumerate(frames):
        extent = min(net.layer(name).extent(Axis.OY) for name in frame.layers)
        for k in (1 << j for j in range(extent.bit_length())):
            if k == tiles[i]:
                continue
            other = named_schedule(problem, "TB-F", [*tiles[:i], k, *tiles[i + 1:]])
            tried += 1
            assert not other.feasible or other.objective_value >= best.objective_value, \
                (i, k, other.objective_value, best.objective_value)
    assert tried >= len(frames)
