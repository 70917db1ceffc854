"""``--solver pyomo:NAME`` reaches the known optima through Pyomo (tested with
``appsi_highs``, which installs from PyPI with highspy), a missing solver is named
with how to install it, and ``--write-model`` writes a model whose optimum, solved
elsewhere, is the known optimum."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pyomo_env = pytest.importorskip("pyomo.environ")

import stems_opt  # noqa: E402
from stems_opt.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOLVER = "pyomo:appsi_highs"
if not pyomo_env.SolverFactory("appsi_highs").available(exception_flag=False):
    pytest.skip("appsi_highs (highspy) is not available to Pyomo", allow_module_level=True)


def known(instance: str, objective: str) -> float:
    problem = stems_opt.load_instance(ROOT / "instances" / f"{instance}.yaml")
    return next(k.value for k in problem.known_optima if k.objective.value == objective)


CASES = [("tiny_chain", "traffic", "columns"), ("tiny_chain", "traffic", "monolithic"),
         ("tiny_residual", "traffic", "monolithic"), ("tiny_residual", "energy", "columns"),
         ("tiny_linear", "energy", "columns"), ("tiny_ann_snn", "traffic", "columns")]


@pytest.mark.parametrize("instance,objective,method", CASES)
def test_known_optima_through_pyomo(instance: str, objective: str, method: str) -> None:
    """The optima recorded in instances/*.yaml (proved by CP-SAT and HiGHS), reached
    with a proof; solve() asserts the MIP objective equals the cost model's value."""
    problem = stems_opt.load_problem(ROOT / "instances" / f"{instance}.yaml")
    result = stems_opt.solve(problem, objective=objective, solver=SOLVER, method=method)
    assert result.status is stems_opt.SolveStatus.OPTIMAL
    assert result.solver == SOLVER
    assert result.objective_value == pytest.approx(known(instance, objective), rel=1e-12)
    assert result.cost.objective_value(objective) == result.objective_value


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["solve", str(ROOT / "instances" / "tiny_reset.yaml"), "--solver", SOLVER,
               "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["solver"] == SOLVER and doc["status"] == "optimal"
    assert doc["objective_value"] == known("tiny_reset", "traffic")


@pytest.mark.parametrize("name,hint", [("cbc", "coincbc"), ("gurobi", "gurobipy"),
                                       ("no_such_solver", "Pyomo documentation")])
def test_missing_solver_is_named_with_install_hint(name: str, hint: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    if pyomo_env.SolverFactory(name).available(exception_flag=False) if name != \
            "no_such_solver" else False:
        pytest.skip(f"{name} is installed here")
    rc = main(["solve", str(ROOT / "instances" / "tiny_chain.yaml"), "--solver", f"pyomo:{name}"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert f"{name!r} is not available to Pyomo" in err and hint in err
    assert "Traceback" not in out + err and "WARNING" not in out + err


@pytest.mark.parametrize("suffix", [".lp", ".mps"])
@pytest.mark.parametrize("instance,objective", [("tiny_residual", "traffic"),
                                                ("tiny_reset", "energy")])
def test_written_model_solves_to_the_known_optimum(suffix: str, instance: str, objective: str,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Read the written file back with HiGHS alone, solve it, undo the constant and
    the scale: the known optimum. (Energy on tiny_reset: its monolithic MIP solves in
    seconds, unlike tiny_residual's.)"""
    import highspy

    path = tmp_path / f"model{suffix}"
    rc = main(["solve", str(ROOT / "instances" / f"{instance}.yaml"), "--objective", objective,
               "--write-model", str(path), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    json.loads(out)  # stdout stays one JSON document; the note goes to stderr
    assert f"wrote {path}" in err
    constant = float(err.split("(objective + ")[1].split(")")[0])
    scale = float(err.split(") / ")[1].split()[0])
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.readModel(str(path))
    assert h.getNumCol() == int(err.split(": ")[2].split(" binaries")[0].replace(",", ""))
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    value = (h.getInfo().objective_function_value + constant) / scale
    assert value == pytest.approx(known(instance, objective), rel=1e-9)


def test_write_model_refuses_other_suffixes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.txt"
    assert main(["solve", str(ROOT / "instances" / "tiny_chain.yaml"),
                 "--write-model", str(path)]) == 2
    assert "must end in .lp or .mps" in capsys.readouterr().err
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_pyomo_is_imported_only_when_asked() -> None:
    code = ("import sys, stems_opt; p = stems_opt.load_problem('instances/tiny_chain.yaml');"
            "stems_opt.solve(p); print('pyomo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert done.stdout.strip() == "False"
