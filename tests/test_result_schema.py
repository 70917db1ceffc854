"""Real outputs of stems-opt validate against docs/result-schema.json.

Every bundled instance is scored by a named schedule (``evaluate --json``);
the small ones are also solved (``solve --json``, ``--out`` mapping files in
YAML and JSON) and compared (``compare --json``). The schema must also refuse
documents that break it, so a vacuous schema fails here too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

import stems_opt  # noqa: E402
from stems_opt.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "result-schema.json").read_text())
INSTANCES = sorted((ROOT / "instances").glob("*.yaml"))
SMALL = [p for p in INSTANCES if p.name.startswith("tiny_")]


def validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    schema = SCHEMA if definition is None else {"$defs": SCHEMA["$defs"],
                                                "$ref": f"#/$defs/{definition}"}
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(schema)


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def tb_lbl_docs() -> dict[str, dict]:
    from stems_opt.report import result_to_dict  # what --json prints

    return {p.name: result_to_dict(problem, stems_opt.named_schedule(problem, "TB-LBL"))
            for p in INSTANCES for problem in [stems_opt.load_problem(p)]}


@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.name)
def test_evaluate_output_of_every_instance(path: Path, tb_lbl_docs: dict[str, dict]) -> None:
    doc = tb_lbl_docs[path.name]
    validator("result").validate(doc)
    validator().validate(doc)
    assert doc["schema_version"] == stems_opt.SCHEMA_VERSION
    assert doc["stems_opt_version"] == stems_opt.__version__
    assert doc["instance"] == path.stem and doc["solver"] == "named:TB-LBL"


def test_cli_evaluate_json_is_the_same_document(tb_lbl_docs: dict[str, dict],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(["evaluate", str(ROOT / "instances" / "tiny_chain.yaml"),
                    "--schedule", "TB-LBL"], capsys)
    expected = dict(tb_lbl_docs["tiny_chain.yaml"])
    for key in ("runtime_s", "build_s"):
        doc.pop(key), expected.pop(key)
    assert doc == expected


@pytest.mark.parametrize("path", SMALL, ids=lambda p: p.name)
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_solve_output_and_mapping_file(path: Path, suffix: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"m{suffix}"
    doc = run_json(["solve", str(path), "--out", str(out)], capsys)
    validator("result").validate(doc)
    assert doc["status"] == "optimal" and doc["solver"] == "cpsat"
    written = yaml.safe_load(out.read_text()) if suffix == ".yaml" else json.loads(out.read_text())
    validator("mapping_file").validate(written)
    validator().validate(written)
    for key in ("instance", "objective", "solver", "status", "objective_value"):
        assert written[key] == doc[key], key
    assert written["mapping"] == doc["mapping"]
    # and the file still reads as a mapping that scores the same
    assert main(["evaluate", str(path), "--mapping", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["objective_value"] == doc["objective_value"]


def test_compare_output(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(["compare", str(ROOT / "instances" / "tiny_residual.yaml")], capsys)
    validator("compare").validate(doc)
    validator().validate(doc)
    assert "optimum" in doc


def test_compare_entry_not_scored(tb_lbl_docs: dict[str, dict]) -> None:
    """compare --json writes this entry for a schedule the time limit left unscored."""
    entry = {"schema_version": stems_opt.SCHEMA_VERSION,
             "stems_opt_version": stems_opt.__version__, "instance": "tiny_chain",
             "status": "not scored", "message": "the time limit came first"}
    doc = {"TB-F": entry, "optimum": tb_lbl_docs["tiny_chain.yaml"]}
    validator("compare").validate(doc)
    assert not validator("compare").is_valid({"TB-F": {**entry, "status": "scored"}})


def test_infeasible_output(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(["evaluate", str(ROOT / "tests" / "data" / "tiny" / "inst.yaml"),
                    "--mapping", str(ROOT / "tests" / "data" / "bad" / "map_overflows_gb.yaml")],
                   capsys)
    assert doc["status"] == "infeasible"
    validator("result").validate(doc)


@pytest.mark.parametrize("mutation", [
    lambda d: d.pop("schema_version"),
    lambda d: d.pop("instance"),
    lambda d: d.update(status="optimalish"),
    lambda d: d.update(extra_key=1),
    lambda d: d["traffic_bits"].update(total=-1),
    lambda d: d["mapping"]["segments"][0].update(time_batch=0),
    lambda d: d["mapping"]["segments"][0]["weights"].update(c1="sometimes"),
])
def test_schema_refuses_broken_documents(mutation: object,
                                         tb_lbl_docs: dict[str, dict]) -> None:
    doc = copy.deepcopy(tb_lbl_docs["tiny_chain.yaml"])
    validator("result").validate(doc)
    mutation(doc)  # type: ignore[operator]
    assert not validator("result").is_valid(doc)
    assert not validator().is_valid(doc)
