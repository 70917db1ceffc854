"""The input limits of ``stems_opt/limits.py`` and the work bounds behind them.

- The worst-case objective is an *upper* bound: no mapping of a brute-forced
  space exceeds it (traffic, and energy in fJ).
- An instance just inside the 2^53 limit solves exactly with both backends;
  one just outside is refused by the loader.
- Work does not grow with a dimension's value: divisors and chunk counts come
  from trial division up to the square root, and the greedy tries a bounded
  number of tile counts on a map of many rows.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest

from stems_opt.hardware import ComputeArray, Hardware, MemoryLevel
from stems_opt.layer_specs import build_network
from stems_opt.network import InputTensor, divisors, most_chunks
from stems_opt.problem import Objective, Problem

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from brute_force import SegmentScorer, Space  # noqa: E402


def _hardware(dram_pj: float = 10.0, gb_bits: int = 10**6) -> Hardware:
    return Hardware("hw", MemoryLevel("dram", None, dram_pj, 1.2 * dram_pj),
                    MemoryLevel("gb", gb_bits, 0.5, 0.7), ComputeArray({"K": 2}, 0.1, 0.2, 0.3))


WORST_CASE_NETWORKS = {
    # One conv: weights, state, the network input's windows and the output write.
    "conv": (2, InputTensor("input", 2, 4, 3, 2),
             [{"name": "c1", "type": "conv", "inputs": ["input"],
               "loop_dims": {"K": 4, "FY": 3, "FX": 3}}]),
    # Two convs: an activation written to and read back from DRAM, window by window.
    "chain": (2, InputTensor("input", 1, 3, 2, 1),
              [{"name": "c1", "type": "conv", "inputs": ["input"],
                "loop_dims": {"K": 2, "FY": 3, "FX": 1}},
               {"name": "c2", "type": "conv", "inputs": ["c1"],
                "loop_dims": {"K": 2, "FY": 3, "FX": 1}, "neuron": "none"}]),
}


@pytest.mark.parametrize("name", sorted(WORST_CASE_NETWORKS))
def test_worst_case_objective_bounds_every_mapping(name: str) -> None:
    """No mapping of the whole space (420 and 20,448 mappings) costs more than the bound.

    Mutations that make this fail: reading each input once instead of ``E``
    times (conv: bound 4,800 < worst mapping 4,944 bits), or streaming the
    weights ``T`` times instead of ``T * E`` (bound 3,360).
    """
    from stems_opt.formulation.data import objective_constant
    from stems_opt.magnitude import worst_case_objective

    T, inp, layers = WORST_CASE_NETWORKS[name]
    problem = Problem(build_network(name, T, inp, layers), _hardware())
    space, scorer = Space(problem), SegmentScorer(problem)
    most_bits = most_fj = 0
    for runs, idx in space.valid_walk():
        bits, memory_fj, _peak = scorer.mapping(space, runs, idx)[:3]
        most_bits, most_fj = max(most_bits, bits), max(most_fj, memory_fj)
    traffic, energy, _ = worst_case_objective(problem.network, problem.hardware)
    assert most_bits <= traffic
    assert most_fj + objective_constant(problem.with_objective(Objective.ENERGY)) <= energy
    # Not vacuous: the worst mapping comes within 5 % of the bound.
    assert most_bits >= 0.95 * traffic


def _edge_problem(k: int) -> Problem:
    """A conv whose worst-case energy sits near 2^53 fJ: DRAM at the 1e6 pJ/bit cap."""
    net = build_network("edge", 2, InputTensor("input", 64, 8, 8, 1),
                        [{"name": "c1", "type": "conv", "inputs": ["input"],
                          "loop_dims": {"K": k, "FY": 3, "FX": 3}}])
    hw = Hardware("edge", MemoryLevel("dram", None, 1e6, 1e6),
                  MemoryLevel("gb", 200_000, 1e3, 1e3), ComputeArray({"K": 4}, 1e3, 1e3, 1e3))
    return Problem(net, hw, Objective.ENERGY)


def test_instance_at_the_limit_solves_exactly_with_both_backends() -> None:
    from stems_opt.cost.evaluation import evaluate
    from stems_opt.limits import MAX_OBJECTIVE
    from stems_opt.magnitude import magnitude_issues, worst_case_objective
    from stems_opt.solvers import solve

    inside, outside = _edge_problem(220), _edge_problem(224)
    energy_in = worst_case_objective(inside.network, inside.hardware)[1]
    energy_out = worst_case_objective(outside.network, outside.hardware)[1]
    assert 2**52.9 < energy_in < MAX_OBJECTIVE <= energy_out
    assert magnitude_issues(inside.network, inside.hardware) == []
    issues = magnitude_issues(outside.network, outside.hardware, "net.yaml")
    assert len(issues) == 1 and issues[0].layer == "c1" and "2^53" in issues[0].message
    values = []
    for solver in ("cpsat", "highs"):
        result = solve(inside, solver=solver)
        assert result.status.value == "optimal", (solver, result.message)
        assert result.objective_value == evaluate(inside, result.mapping).total_energy_pj
        values.append(result.objective_value)
    assert values[0] == values[1]


def test_divisors_and_chunks_by_trial_division() -> None:
    for n in (1, 12, 720720, 2**31 - 1):
        small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
        assert divisors(n) == sorted(set(small + [n // d for d in small]))
    # Brute force: the most chunks c with c | K and K / c >= the K unrolling.
    for k in range(1, 200):
        for ku in range(1, 24):
            expect = max((c for c in range(1, k + 1) if k % c == 0 and k // c >= ku), default=1)
            assert most_chunks(k, ku) == expect, (k, ku)
    # K = 10^9 took 55 s counting to K; trial division stops at 31,623.
    assert most_chunks(10**9, 3) == 10**9 // 4
    assert most_chunks(2**31 - 1, 2) == 1  # a prime: one chunk of all of K


def test_count_candidates_exhaustive_up_to_256_then_geometric() -> None:
    from stems_opt.heuristics.named import EXHAUSTIVE_COUNTS, count_candidates

    assert EXHAUSTIVE_COUNTS == 256  # every bundled network's extents are below it
    for limit in (1, 7, 112, 256):
        assert list(count_candidates(limit)) == list(range(1, limit + 1))
    grid = list(count_candidates(10_000))
    assert grid[:16] == list(range(1, 17)) and grid[-1] == 10_000
    assert grid == sorted(set(grid)) and len(grid) <= 50
    assert all(b <= 1.25 * a + 1 for a, b in itertools.pairwise(grid))


def test_named_schedule_on_a_tall_map_tries_few_tile_counts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """TB-F on a 2 x 400 x 8 map: the one-by-one scans use the grid of
    ``count_candidates`` and the whole-schedule search powers of two, so at most
    40 distinct tile counts are tried, not 400.

    (A 2 x 2000 x 8 map tried all 2,000 in 102 s before; 38 in 4 s after.)
    """
    from stems_opt.heuristics import named, named_schedule

    net = build_network("tall", 1, InputTensor("input", 2, 400, 8, 1),
                        [{"name": "c1", "type": "conv", "inputs": ["input"],
                          "loop_dims": {"K": 2, "FY": 3, "FX": 3}},
                         {"name": "c2", "type": "conv", "inputs": ["c1"],
                          "loop_dims": {"K": 2, "FY": 3, "FX": 3}}])
    problem = Problem(net, _hardware(gb_bits=4096))
    tried: set[int] = set()
    fit = named.Scorer.fit

    def counting_fit(self: object, seg: object, ctx: object) -> object:
        tried.add(seg.tiles)  # type: ignore[attr-defined]
        return fit(self, seg, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(named.Scorer, "fit", counting_fit)
    result = named_schedule(problem, "TB-F")
    assert result.feasible
    powers = {1 << k for k in range(9)}
    assert tried <= set(named.count_candidates(400)) | powers and len(tried) <= 40


def test_evaluate_with_a_billion_output_channels_finishes(tmp_path: Path) -> None:
    # The timeout only guards against a hang (the loop to K took 55-140 s).
    net = tmp_path / "net.yaml"
    net.write_text("name: wide\ntimesteps: 1\ninput: {channels: 1, height: 2, width: 2}\n"
                   "layers:\n  - {name: c1, type: conv, inputs: [input], "
                   "loop_dims: {K: 1000000000}}\n")
    inst = tmp_path / "inst.yaml"
    inst.write_text(f"network: {net}\nhardware: {ROOT / 'tests/data/tiny/hw.yaml'}\n")
    proc = subprocess.run([sys.executable, "-m", "stems_opt.cli", "evaluate", str(inst),
                           "--schedule", "TB-F"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1 and "DOES NOT FIT" in proc.stdout  # 4e9 weight bits


@pytest.mark.parametrize("instance", sorted(p.name for p in (ROOT / "instances").glob("*.yaml")))
def test_every_bundled_instance_validates_within_the_limits(
        instance: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each bundled instance passes ``validate`` (exit 0), with its worst case below
    2^52 for both objectives (docs/formats.md, Limits: RED-LIF energy is the largest)."""
    from stems_opt.cli import main
    from stems_opt.io import load_instance
    from stems_opt.magnitude import worst_case_objective

    path = ROOT / "instances" / instance
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    problem = load_instance(path)
    traffic, energy, _ = worst_case_objective(problem.network, problem.hardware)
    assert traffic < energy < 2**52
