"""Loop nests in mapping files: written by --out, read back, pinned, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stems_opt.cli import main

ROOT = Path(__file__).resolve().parent.parent
LINEAR = ROOT / "instances" / "tiny_linear.yaml"
ENERGY_OPTIMUM_PJ = 118927.68  # tiny_linear's proven energy optimum (instance file)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.fixture(scope="module")
def solved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tiny_linear's energy optimum as written by ``solve --out``."""
    path = tmp_path_factory.mktemp("nests") / "opt.yaml"
    assert main(["solve", str(LINEAR), "--objective", "energy", "--out", str(path)]) == 0
    return yaml.safe_load(path.read_text())


def _evaluate(doc: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
              name: str = "m.yaml") -> tuple[int, str, str]:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return _run(["evaluate", str(LINEAR), "--objective", "energy", "--mapping", str(path),
                 "--json"], capsys)


def _fc(doc: dict) -> dict:
    return doc["mapping"]["segments"][-1]["nests"]["fc"][0]


def test_solve_writes_every_step_nest_and_evaluate_reads_them(
        solved: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """solve -> write -> evaluate: the same energy, with every nest pinned."""
    nests = {name for seg in solved["mapping"]["segments"] for name in seg.get("nests", {})}
    assert nests == {"c1", "fc"}  # the conv and linear layers; pool and flatten have none
    assert solved["objective_value"] == pytest.approx(ENERGY_OPTIMUM_PJ, abs=1e-6)
    rc, out, err = _evaluate(solved, tmp_path, capsys)
    assert rc == 0, err
    assert json.loads(out)["objective_value"] == pytest.approx(ENERGY_OPTIMUM_PJ, abs=1e-6)
    # Without nests the same mapping gets the optimal nests: the same energy.
    bare = json.loads(json.dumps(solved))
    for seg in bare["mapping"]["segments"]:
        seg.pop("nests", None)
    rc, out, _ = _evaluate(bare, tmp_path, capsys, "bare.yaml")
    assert json.loads(out)["objective_value"] == pytest.approx(ENERGY_OPTIMUM_PJ, abs=1e-6)


def test_a_worse_nest_scores_its_hand_computed_cost(
        solved: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """fc (linear, K 8, C 64, 4-bit weights, 12-bit state, Tb = T = 4) on the
    tiny array (K 4 x C 2): temporal extents K 2, C 32, T 4. The optimum runs
    ``[K 2, T 4, C 2, C 16]`` (outermost first; the weight buffer holds C 16,
    the input buffer everything): 3,017,280 fJ, of which the state is read and
    written once per neuron, 8 x 12 = 96 bits each way at GB 130 + 175 fJ/bit
    = 29,280 fJ, since the 4 T loops sit below the only K loop.
    ``[T 4, K 2, C 2, C 16]`` keeps every other count (W register 8,192 bits,
    W buffer 16 fills of 512 bits, I 512 register and 256 buffer bits, 32
    output bits, no partial sum) but the state goes up and down every
    timestep: 8 x 4 x 12 = 384 bits each way, 117,120 fJ, 87,840 fJ more.
    One step, one time batch: 118,927.68 + 87.84 = 119,015.52 pJ."""
    fc = _fc(solved)
    assert fc["loops"] == ["K 2", "T 4", "C 2", "C 16"] and fc["held"] == {"I": 4, "W": 1}
    worse = json.loads(json.dumps(solved))
    _fc(worse)["loops"] = ["T 4", "K 2", "C 2", "C 16"]
    rc, out, err = _evaluate(worse, tmp_path, capsys)
    assert rc == 0, err
    assert json.loads(out)["objective_value"] == pytest.approx(119015.52, abs=1e-6)


@pytest.mark.parametrize(("layer", "change", "message"), [
    ("fc", {"loops": ["K 2", "T 4", "C 2", "C 8"]},
     "loops over C multiply to 16; the step's temporal extent of C is 32"),
    # W held over C 16 and C 2: K 4 x C 64 x 4 bits = 1,024 > 512.
    ("fc", {"held": {"I": 4, "W": 2}}, "W tile of 1024 bits exceeds weight_buffer (512 bits)"),
    ("fc", {"loops": ["K 2", "C 2", "T 4", "C 16"]}, "a T loop sits inside the C loop (causality)"),
    # I held over every loop: C 2 x 5 rows x 8 columns x 4 timesteps = 320 > 256 bits.
    ("c1", {"held": {"I": 6, "W": 6}}, "I tile of 320 bits exceeds input_buffer (256 bits)"),
])
def test_invalid_nests_are_rejected(solved: dict, tmp_path: Path, layer: str, change: dict,
                                    message: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = json.loads(json.dumps(solved))
    bad["mapping"]["segments"][-1]["nests"][layer][0].update(change)
    rc, _, err = _evaluate(bad, tmp_path, capsys)
    assert rc == 2
    assert f"m.yaml, segment 0, layer '{layer}', field 'nests.{layer}[0]': {message}" in err


def test_every_nest_problem_at_once(solved: dict, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Two bad nests and a step that does not exist: all reported, by validate too."""
    bad = json.loads(json.dumps(solved))
    nests = bad["mapping"]["segments"][-1]["nests"]
    nests["fc"][0]["loops"] = ["K 2", "C 2", "T 4", "C 16"]
    nests["c1"][0].update(loops=["OX 2", "OY 4", "T 4", "FX 3", "FY 3"], held={"I": 5, "W": 5})
    nests["c1"].append({**nests["c1"][0], "oy": 3})
    rc, _, err = _evaluate(bad, tmp_path, capsys)
    assert rc == 2
    assert "field 'nests.fc[0]': a T loop sits inside the C loop" in err
    assert "field 'nests.c1[0]': loops over OX multiply to 2; the step's temporal extent " \
           "of OX is 8" in err
    assert "field 'nests.c1[1]': no step of the layer has oy 3 ox 8 iy 5 ix 8 (its steps: " \
           "oy 4 ox 8 iy 5 ix 8)" in err
    rc, _, err2 = _run(["validate", str(LINEAR), "--mapping", str(tmp_path / "m.yaml")], capsys)
    assert rc == 2 and err2.count("nests.") == 3


def test_malformed_nests_name_the_field(solved: dict, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = json.loads(json.dumps(solved))
    _fc(bad)["loops"] = ["K 2", "X 4", "C two"]
    _fc(bad)["held"] = {"O": 1}
    rc, _, err = _evaluate(bad, tmp_path, capsys)
    assert rc == 2
    assert "field 'nests.fc[0].loops[1]': must be 'DIM FACTOR'" in err
    assert "field 'nests.fc[0].loops[2]': must be 'DIM FACTOR'" in err
    assert "field 'nests.fc[0].held': must name an operand W or I, got 'O'" in err
