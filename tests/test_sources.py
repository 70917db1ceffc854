"""A network file and a hardware file on the command line give the same problem as the
instance that names them; mixing the two forms is refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stems_opt.cli import main
from stems_opt.sources import load_problem

ROOT = Path(__file__).resolve().parent.parent
NET = ROOT / "models" / "networks" / "tiny_chain.yaml"
HW = ROOT / "models" / "hardware" / "tiny.yaml"
INSTANCE = ROOT / "instances" / "tiny_chain.yaml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.parametrize("objective", ["traffic", "energy"])
def test_network_and_hardware_solve_like_the_instance(objective: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """tiny_chain's known optima (instances/tiny_chain.yaml): traffic 17280 bits,
    energy 213490.56 pJ; the same files given separately reach the same values."""
    docs = []
    for argv in (["solve", str(INSTANCE)], ["solve", str(NET), "--hardware", str(HW)]):
        rc, out, err = run([*argv, "--objective", objective, "--json"], capsys)
        assert rc == 0, err
        docs.append(json.loads(out))
    assert docs[0]["objective_value"] == docs[1]["objective_value"]
    assert docs[1]["objective_value"] == {"traffic": 17280, "energy": 213490.56}[objective]
    assert docs[1]["instance"] == "tiny_chain@tiny"


def test_objective_defaults_to_traffic() -> None:
    assert load_problem(NET, HW).objective.value == "traffic"


@pytest.mark.parametrize("command", [["evaluate", "--schedule", "TB-LBL"], ["validate"],
                                     ["compare", "--schedules", "TB-LBL"]])
def test_other_commands_take_network_and_hardware(command: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run([command[0], str(NET), "--hardware", str(HW), *command[1:]], capsys)
    assert rc == 0, err
    assert "tiny_chain" in out


def test_network_without_hardware_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["solve", str(NET)], capsys)
    assert rc == 2
    assert "tiny_chain.yaml" in err and "is a network file" in err and "--hardware" in err


def test_instance_with_hardware_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["solve", str(INSTANCE), "--hardware", str(HW)], capsys)
    assert rc == 2
    assert "instance" in err and "field 'hardware'" in err


def test_timesteps_only_for_nir(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["solve", str(NET), "--hardware", str(HW), "--timesteps", "2"], capsys)
    assert rc == 2
    assert "NIR models only" in err


def test_problems_of_both_files_at_once(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net.yaml"
    net.write_text(NET.read_text().replace("K: 4, C: 2", "K: -4, C: 2"))
    hw = tmp_path / "hw.yaml"
    hw.write_text(HW.read_text().replace("size: 4096", "size: 0"))
    rc, _, err = run(["solve", str(net), "--hardware", str(hw)], capsys)
    assert rc == 2
    assert "net.yaml" in err and "loop_dims.K" in err
    assert "hw.yaml" in err and "field 'size'" in err
