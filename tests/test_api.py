"""The embedding API: docs/api.md runs as written, the compiler-pass example annotates
every node with its plan, the builders' defaults equal the YAML defaults, and the
``to_dict`` forms are plain JSON."""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from pathlib import Path

import pytest

import stems_opt
from stems_opt.io import hardware_from_dict, network_from_dict

ROOT = Path(__file__).resolve().parent.parent


def test_api_doc_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                      tmp_path: Path) -> None:
    """Every Python block of docs/api.md runs as written; its nest-table example keeps
    the table under ``~`` of a home made for the test, not the user's."""
    pytest.importorskip("nir")
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 5
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    assert "conv1" in namespace["plans"]
    assert list((tmp_path / ".cache" / "stems_opt").glob("nests-*.npz"))


def test_solve_takes_keywords_only() -> None:
    params = inspect.signature(stems_opt.solve).parameters
    assert [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY] == [
        "objective", "solver", "time_limit_s", "threads", "seed", "method"]
    with pytest.raises(TypeError):
        stems_opt.solve(None, "cpsat")  # type: ignore[misc]


def test_compiler_pass_annotates_every_node(tmp_path: Path) -> None:
    nir = pytest.importorskip("nir")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from nir_compiler_pass import annotate
    finally:
        sys.path.remove(str(ROOT / "examples"))
    out = tmp_path / "annotated.nir"
    # T = 2 keeps it quick; the annotation must follow the mapping, whatever it is.
    result = annotate(ROOT / "models" / "nir" / "spikingjelly_sew.nir",
                      ROOT / "models" / "hardware" / "tiny.yaml", 2, out)
    assert result.status is stems_opt.SolveStatus.OPTIMAL
    graph = nir.read(out, type_check=False)
    segment_of = {name: i for i, seg in enumerate(result.mapping.segments) for name in seg.layers}
    fused = {"sn1": "conv1", "sn2": "conv2", "sn3": "conv3", "sn4": "fc"}
    for name, node in graph.nodes.items():
        layer = fused.get(name, name)
        if layer not in segment_of:
            assert name in ("input", "output")
            continue
        meta = node.metadata["stems_opt"]
        seg = result.mapping.segments[segment_of[layer]]
        assert int(meta["segment"]) == segment_of[layer]
        assert int(meta["time_batch"]) == seg.time_batch and int(meta["tiles"]) == seg.tiles
        if layer in seg.weights:
            assert meta["weights"] == str(seg.weight(layer))
        if layer in seg.states:
            assert meta["state"] == seg.state(layer).value
        if name in fused:
            assert meta["layer"] == layer


def test_builder_defaults_equal_yaml_defaults() -> None:
    """A minimal YAML array and input give exactly the builders' defaults."""
    minimal_hw = {"dram": {"read_pj_per_bit": 1, "write_pj_per_bit": 1},
                  "global_buffer": {"size": 64, "read_pj_per_bit": 0, "write_pj_per_bit": 0},
                  "operational_array": {"sizes": {}}}
    array = hardware_from_dict(minimal_hw).array
    assert array == stems_opt.ComputeArray()
    assert array.pe_count == 1
    net = network_from_dict({"timesteps": 1, "input": {"channels": 1, "height": 1, "width": 1},
                             "layers": [{"name": "l", "type": "linear", "inputs": ["input"],
                                         "loop_dims": {"K": 1}}]})
    assert net.input == stems_opt.InputTensor("input", 1, 1, 1)
    built = stems_opt.build_network("x", 1, stems_opt.InputTensor("input", 1, 1, 1),
                                    [{"name": "l", "type": "linear", "inputs": ["input"],
                                      "loop_dims": {"K": 1}}], stems_opt.NetworkDefaults())
    assert built.layers == net.layers


def test_to_dict_is_plain_json() -> None:
    problem = stems_opt.load_problem(ROOT / "instances" / "tiny_residual.yaml")
    result = stems_opt.solve(problem, objective="energy", solver="highs")
    doc = result.to_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["objective_value"] == doc["energy_pj"]["total"] == result.objective_value
    assert result.cost.to_dict()["traffic_bits"]["total"] == result.cost.traffic_bits
    assert stems_opt.Mapping.from_dict(doc["mapping"]) == result.mapping


def test_py_typed_is_shipped() -> None:
    assert (ROOT / "stems_opt" / "py.typed").exists()
    assert 'stems_opt = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()
    assert os.path.getsize(ROOT / "stems_opt" / "py.typed") == 0
