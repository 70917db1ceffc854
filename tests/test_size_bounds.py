"""Buffer sizes solved in order: the bound handed from a larger buffer to a smaller one.

The bound is valid because the optimum never rises with the buffer; both are
checked against the brute-force (peak, objective) frontier of the
hand-picked cases, at every frontier point's peak (where the optimum steps).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from stems_opt.problem import Objective
from stems_opt.result import SolveStatus
from stems_opt.size_bounds import solve_sizes, with_capacity

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import brute_force as bf  # noqa: E402
from test_optimizer import CASES, OBJECTIVES, case_frontiers, make_problem, same  # noqa: E402


def optimum(frontier: list[bf.Point], capacity_bits: int, p) -> float | None:
    """The brute-force optimum at ``capacity_bits`` in objective units."""
    from stems_opt.cost.evaluation import evaluate

    point = bf.optimum_at(frontier, capacity_bits)
    if point is None:
        return None
    return evaluate(with_capacity(p, capacity_bits), point.mapping).objective_value(
        p.objective.value)


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", list(CASES))
def test_optimum_never_rises_with_the_buffer(case: str, objective: Objective) -> None:
    """The premise of the sweep bound, on the brute-force frontier: at every pair of
    sizes the larger buffer's optimum is at most the smaller one's."""
    network, ku, size = CASES[case]
    frontier = case_frontiers(case)[0][objective]
    p = make_problem(network, size, ku, objective)
    sizes = sorted({pt.peak_bits for pt in frontier})
    values = [optimum(frontier, s, p) for s in sizes]
    for small, large in itertools.pairwise(values):
        assert small is not None and large is not None and large <= small


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.value)
@pytest.mark.parametrize("case", ["chain_T4", "residual_T1", "conv_pool_T2_chunks"])
def test_sweep_hints_never_exceed_the_optimum(case: str, objective: Objective) -> None:
    """Every bound the sweep hands to a buffer is at most that buffer's brute-force
    optimum, and every point is still proven at it.

    Mutation: sweeping smallest first (``reverse=False`` in :func:`solve_sizes`) hands
    a smaller buffer's optimum to a larger one; where the frontier steps down
    that hint exceeds the larger buffer's optimum and this test fails.
    """
    network, ku, size = CASES[case]
    frontier = case_frontiers(case)[0][objective]
    p = make_problem(network, size, ku, objective)
    sizes = sorted({pt.peak_bits for pt in frontier})
    results = solve_sizes(p, sizes, time_limit_s=60.0)
    for s, r in zip(sizes, results, strict=True):
        want = optimum(frontier, s, p)
        assert want is not None
        hint = float(r.stats["lower_bound_hint"])
        assert hint <= want * (1 + 1e-12), (s, hint, want)
        assert r.status is SolveStatus.OPTIMAL and same(objective, r.objective_value, want)
    values = [optimum(frontier, s, p) for s in sizes]
    assert values[0] > values[-1], "the case's optimum must step with the buffer"


def _row(size_kb: int, value: str, bound: str, objective: str = "traffic") -> dict[str, str]:
    gap = "" if not value or not bound else repr((float(value) - float(bound)) / float(value))
    return {"network": "n", "network_file": "n.yaml", "hardware": "h", "hardware_file": "h.yaml",
            "gb_capacity_bits": str(size_kb * 8192), "objective": objective,
            "state_persistence": "streaming", "status": "optimal" if gap in ("0.0",) else
            "feasible", "value": value, "bound": bound, "gap": gap,
            "traffic_bits": value, "energy_pj": ""}


def test_size_envelope_by_hand() -> None:
    """Bounds flow to smaller buffers, mappings to larger ones, never the other way.

    128 KB (100, bound 50), 256 KB (90, bound 80), 512 KB (80, bound 80, proven):
    128 KB takes the bound 80 of 256 KB (the nearest of the two sizes with 80) and
    keeps its mapping: gap (100 - 80) / 100 = 0.2. 256 KB keeps its own bound (80)
    and value (128 KB's 100 is worse): unchanged, gap 1/9. 512 KB is unchanged.
    Taking bounds from smaller buffers (or mappings from larger ones) would give
    128 KB nothing and 512 KB the bound 50 or the value 90: this test fails.
    """
    from stems_opt.size_bounds import size_envelope

    rows = [_row(128, "100", "50"), _row(512, "80", "80"), _row(256, "90", "80"),
            _row(128, "7", "7", objective="energy")]
    out = size_envelope(rows)
    assert [r["gb_capacity_bits"] for r in out] == [r["gb_capacity_bits"] for r in rows]
    small, large, mid, other = out
    assert (small["bound"], small["value"], small["status"]) == ("80", "100", "feasible")
    assert float(small["gap"]) == pytest.approx(0.2)
    assert small["envelope"] == "bound from 256 KB"
    assert (mid["bound"], mid["value"], mid["envelope"]) == ("80", "90", "")
    assert (large["bound"], large["value"], large["envelope"]) == ("80", "80", "")
    assert (other["bound"], other["envelope"]) == ("7", "")  # another slope: untouched
    assert rows[0]["bound"] == "50"  # the input rows are not changed


def test_size_envelope_mapping_from_a_smaller_buffer_proves() -> None:
    """128 KB found 100 and proved it; 256 KB stopped at 120 with bound 60. 128 KB's
    mapping fits 256 KB (same cost), and 512 KB's proven 100 bounds 256 KB from
    below: 256 KB becomes proven at 100, with both sources named."""
    from stems_opt.size_bounds import size_envelope

    out = size_envelope([_row(128, "100", "100"), _row(256, "120", "60"),
                         _row(512, "100", "100")])
    assert (out[1]["value"], out[1]["bound"], out[1]["status"], out[1]["gap"]) == (
        "100", "100", "optimal", "0")
    assert out[1]["envelope"] == "bound from 512 KB; mapping from 128 KB"
    assert out[1]["traffic_bits"] == "100"


@pytest.mark.parametrize("case", ["chain_T4", "residual_T1", "conv_pool_T2_chunks"])
def test_size_envelope_bounds_never_exceed_the_optimum(case: str) -> None:
    """On the brute-force frontier, with every size's optimum as its own proven bound,
    the envelope gives no size a bound above its optimum (nor a value below it).

    Mutation: taking the largest bound over every size (smaller ones too) hands a
    smaller buffer's optimum to a larger one; where the frontier steps down, that
    exceeds the larger buffer's optimum and this test fails.
    """
    from stems_opt.size_bounds import size_envelope

    network, ku, size = CASES[case]
    frontier = case_frontiers(case)[0][Objective.TRAFFIC]
    p = make_problem(network, size, ku, Objective.TRAFFIC)
    peaks = sorted({pt.peak_bits for pt in frontier})
    caps = sorted({*peaks, *(pk + 1 for pk in peaks)})
    rows = []
    for cap in caps:
        opt = optimum(frontier, cap, p)
        assert opt is not None
        r = _row(1, str(int(opt)), str(int(opt)))
        r["gb_capacity_bits"] = str(cap)
        rows.append(r)
    assert float(rows[0]["value"]) > float(rows[-1]["value"]), "the optimum must step"
    for r in size_envelope(rows):
        opt = optimum(frontier, int(r["gb_capacity_bits"]), p)
        assert float(r["bound"]) <= opt <= float(r["value"])
