#!/usr/bin/env python3
"""A compiler pass: read a NIR graph, find its optimal mapping, annotate every node.

Each NIR node that became a layer gets ``metadata["stems_opt"]`` with its
segment, time batch, tiles, tile axis and loop order, and, where they apply,
its weight residency, neuron-state residency and where its output goes; a
neuron node gets the annotation of the conv or linear node it was fused into.
The annotated graph is written as a new NIR file, for a back end to read.

Run from the repository root::

    python examples/nir_compiler_pass.py models/nir/spikingjelly_sew.nir \\
        models/hardware/tiny.yaml 4 annotated.nir
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nir

import stems_opt


def layer_plans(problem: stems_opt.Problem, mapping: stems_opt.Mapping) -> dict[str, dict]:
    """Per layer name: where the mapping puts it and what stays on chip."""
    net = problem.network
    plans: dict[str, dict[str, Any]] = {}
    for index, seg in enumerate(mapping.canonical(net).segments):
        for name in seg.layers:
            layer = net.layer(name)
            plan: dict[str, Any] = {
                "segment": index, "time_batch": seg.time_batch, "tiles": seg.tiles,
                "tile_axis": seg.axis.value, "order": seg.order.value,
                "sub_tiles": seg.sub_tile(name),
            }
            if layer.has_weights:
                plan["weights"] = str(seg.weight(name))  # resident or streamed/<chunks>
            if layer.stateful:
                plan["state"] = seg.state(name).value  # resident, tile_resident, spilled
            consumers = [c for c in net.consumers(name) if c in seg.layers]
            plan["output"] = seg.activation(name).value if consumers else "dram"
            plans[name] = plan
    return plans


def _nodes(graph: Any, prefix: str = "") -> dict[str, Any]:
    """Every node by the name the importer gives it (``outer.inner`` inside nested graphs)."""
    out = {}
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            out.update(_nodes(node, f"{prefix}{name}."))
        else:
            out[prefix + name] = node
    return out


def annotate(source: str | Path, hardware: str | Path, timesteps: int, target: str | Path,
             objective: str = "traffic") -> stems_opt.Result:
    """Solve the NIR model at ``source`` on ``hardware`` and write the annotated graph."""
    problem = stems_opt.load_problem(source, hardware, nir=stems_opt.NirOptions(timesteps))
    result = stems_opt.solve(problem, objective=objective)
    if result.mapping is None:
        raise SystemExit(f"no mapping: {result.status.value} {result.message}")
    plans = layer_plans(problem, result.mapping)
    graph = nir.read(source, type_check=False)
    nodes = _nodes(graph)
    for name, node in nodes.items():
        if name in plans:
            node.metadata = {**(node.metadata or {}), "stems_opt": plans[name]}
    # A neuron fused into the conv or linear node before it shares that node's plan.
    for src, dst in graph.edges:
        if src in plans and dst in nodes and dst not in plans and \
                type(nodes[dst]).__name__ in ("LIF", "CubaLIF", "IF", "LI", "I", "Threshold"):
            nodes[dst].metadata = {**(nodes[dst].metadata or {}),
                                   "stems_opt": {**plans[src], "layer": src}}
    nir.write(target, graph)
    return result


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    res = annotate(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
    print(f"{res.status.value}: {res.objective} {res.objective_value:,} -> {sys.argv[4]}")
