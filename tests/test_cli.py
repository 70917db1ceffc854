"""Happy paths of the command line on the tiny instance in ``tests/data/tiny``.

``solve`` and ``compare`` are not tested here (the solver is not written yet).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stems_opt.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny"
INSTANCE = TINY / "inst.yaml"
SCHEDULES = ["ST-LBL", "TB-LBL", "TB-F", "ST-F"]
TENSOR_CLASSES = ("weights", "state", "activations")
LAYERS = ["c1", "c2", "add", "pool"]
HEAVY = ("ortools", "highspy", "pyomo")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def evaluate_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    rc, out, err = run_cli(["evaluate", str(INSTANCE), *argv, "--json"], capsys)
    assert rc == 0, err
    assert err == ""
    return json.loads(out)  # the whole of stdout is one JSON document


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_evaluate_schedule_table(schedule: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["evaluate", str(INSTANCE), "--schedule", schedule], capsys)
    assert rc == 0, err
    assert err == ""
    assert f"named:{schedule}" in out
    assert "status: feasible" in out
    for cls in (*TENSOR_CLASSES, "total"):
        assert re.search(rf"^\s+{cls}\s+[\d,.]+\s+[\d,.]+\s+[\d,.]+", out, re.MULTILINE), cls
    assert "energy (uJ)" in out
    assert "peak global buffer" in out
    assert "DOES NOT FIT" not in out


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_evaluate_schedule_json(schedule: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = evaluate_json(["--schedule", schedule], capsys)
    assert doc["status"] == "feasible"
    assert doc["objective"] == "traffic"
    tr = doc["traffic_bits"]
    by = tr["by_tensor"]
    assert set(TENSOR_CLASSES) <= set(by)
    assert all(isinstance(by[c], int) and by[c] >= 0 for c in TENSOR_CLASSES)
    assert sum(by.values()) == tr["total"]
    assert tr["reads"] + tr["writes"] == tr["total"]
    assert sum(tr["by_segment"]) == tr["total"]
    assert sum(tr["by_layer"].values()) == tr["total"]
    assert tr["total"] >= doc["lower_bound_bits"] > 0
    assert doc["objective_value"] == tr["total"]

    energy = doc["energy_pj"]
    parts = sum(v for k, v in energy.items() if k != "total")
    assert energy["total"] > 0
    assert math.isclose(parts, energy["total"], rel_tol=1e-9)

    assert 0 < doc["peak_gb_bits"] <= doc["capacity_bits"] == 4096
    assert doc["peak_gb_bits"] == max(s["peak_gb_bits"] for s in doc["segments"])

    segments = doc["mapping"]["segments"]
    assert [name for seg in segments for name in seg["layers"]] == LAYERS
    assert all(4 % seg["time_batch"] == 0 for seg in segments)


def test_energy_objective(capsys: pytest.CaptureFixture[str]) -> None:
    doc = evaluate_json(["--schedule", "TB-F", "--objective", "energy"], capsys)
    assert doc["objective"] == "energy"
    assert math.isclose(doc["objective_value"], doc["energy_pj"]["total"], rel_tol=1e-12)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_out_then_mapping_round_trip(schedule: str, suffix: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    mapping_file = tmp_path / f"m{suffix}"
    first = evaluate_json(["--schedule", schedule, "--out", str(mapping_file)], capsys)
    assert mapping_file.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [mapping_file.name]  # no temp files
    if suffix == ".json":
        json.loads(mapping_file.read_text())

    second = evaluate_json(["--mapping", str(mapping_file)], capsys)
    assert second["status"] == "feasible"
    for key in ("traffic_bits", "energy_pj", "peak_gb_bits", "latency_cycles", "segments",
                "mapping"):
        assert second[key] == first[key], key

    rc, out, err = run_cli(["validate", str(INSTANCE), "--mapping", str(mapping_file)], capsys)
    assert rc == 0, err
    assert "valid, fits the global buffer" in out


def test_out_overwrites_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "m.yaml"
    target.write_text("old contents\n")
    evaluate_json(["--schedule", "TB-F", "--out", str(target)], capsys)
    assert "old contents" not in target.read_text()
    assert target.read_text().startswith("schema_version:")  # what it was solved for, first
    assert "\nmapping:\n" in target.read_text()


def test_out_relative_to_working_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evaluate_json(["--schedule", "TB-F", "--out", "m.yaml"], capsys)
    assert "\nmapping:\n" in (tmp_path / "m.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.yaml"]  # no temp files


def test_json_result_is_accepted_as_a_mapping(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    first = evaluate_json(["--schedule", "ST-F"], capsys)
    result_file = tmp_path / "result.json"
    result_file.write_text(json.dumps(first))
    second = evaluate_json(["--mapping", str(result_file)], capsys)
    assert second["traffic_bits"] == first["traffic_bits"]
    assert second["energy_pj"] == first["energy_pj"]


def test_validate_good_instance(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(["validate", str(INSTANCE)], capsys)
    assert rc == 0, err
    assert err == ""
    assert "network 'tiny': 4 layers, T = 4" in out
    assert "global buffer 4,096 bits" in out


def test_help_does_not_import_solvers() -> None:
    code = (
        "import json, sys\n"
        "from stems_opt.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "else:\n"
        "    code = 'no SystemExit'\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}
    assert "usage: stems-opt" in proc.stdout
    for command in ("evaluate", "validate", "solve", "compare"):
        assert command in proc.stdout
    assert "Exit codes" in proc.stdout


@pytest.mark.parametrize("command", ["evaluate", "validate", "solve", "compare"])
def test_subcommand_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: stems-opt {command}" in capsys.readouterr().out


def test_real_executable_json(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "stems_opt.cli", "evaluate", str(INSTANCE),
                           "--schedule", "TB-F", "--json"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["status"] == "feasible"
    assert sum(doc["traffic_bits"]["by_tensor"].values()) == doc["traffic_bits"]["total"]
