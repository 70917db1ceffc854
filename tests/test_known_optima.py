"""The optima recorded in instances/*.yaml, re-proved by both backends.

Each instance file states its proof in a comment: most tiny instances reach
the compulsory traffic (input + outputs + every weight once + 2|V|), which no
mapping can undercut, so the optimum is known without any solver; the others
are certified by a zero gap from both backends.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from stems_opt.cost.traffic import compulsory_traffic_bits
from stems_opt.io import load_instance
from stems_opt.result import SolveStatus
from stems_opt.solvers import solve

ROOT = Path(__file__).resolve().parent.parent
CASES = [(path, known) for path in sorted((ROOT / "instances").glob("*.yaml"))
         for known in load_instance(path).known_optima]


NOT_COMPULSORY = {"tiny_ann_snn", "red_lif_1mb", "sew_resnet152_1mb"}
"""Instances whose traffic optimum is above the compulsory traffic (certified by a zero gap)."""


def test_tiny_instances_record_their_optima() -> None:
    names = {path.stem for path, _ in CASES}
    assert {"tiny_chain", "tiny_residual", "tiny_reset", "tiny_linear", "tiny_ann_snn",
            "sew_resnet18_1mb", "sew_resnet18_5plif_1mb", "red_lif_1mb"} <= names


RED_LIF_NESTS = pytest.mark.xdist_group("red_lif_nests")
"""RED-LIF's energy solves and ``tests/test_nest_floor.py``'s RED-LIF floors run in one
xdist worker: they solve the same step shapes' nests (the process's nest table), about
17 s of CPU that the second of them finds done."""


@pytest.mark.parametrize("solver", ["cpsat", "highs"])
@pytest.mark.parametrize(("path", "known"), [
    pytest.param(p, k, id=f"{p.stem}-{k.objective.value}",
                 marks=[RED_LIF_NESTS] if (p.stem, k.objective.value) == ("red_lif_1mb", "energy")
                 else []) for p, k in CASES])
def test_known_optimum(path: Path, known, solver: str) -> None:
    problem = load_instance(path).with_objective(known.objective)
    # (no named fallback: the proof needs none, and its second process would take
    # the other test worker's core)
    result = solve(problem, solver, time_limit_s=300, warm_start=False)
    assert result.status is SolveStatus.OPTIMAL and result.gap == 0.0
    assert math.isclose(result.objective_value, known.value, rel_tol=1e-12)
    assert math.isclose(result.cost.objective_value(known.objective.value), known.value,
                        rel_tol=1e-12)
    if known.objective.value == "traffic" and path.stem not in NOT_COMPULSORY:
        # The proof in the instance file: the optimum is the compulsory traffic.
        assert known.value == compulsory_traffic_bits(problem.network)
