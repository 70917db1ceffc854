"""What a problem can be read from: an instance file, or a network (YAML or NIR) plus hardware.

The command line and :func:`load_problem` accept the same three forms::

    instance.yaml                                  # names its network and hardware
    network.yaml --hardware hw.yaml                # the objective from the caller
    model.nir --hardware hw.yaml --timesteps T     # NIR needs T (and takes precisions)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stems_opt.errors import Issue, StemsInputError
from stems_opt.io import (
    hardware_from_dict,
    load_instance,
    network_from_dict,
    read_document,
)
from stems_opt.nir_import import NIR_SUFFIX, NirOptions, load_nir
from stems_opt.problem import Objective, Problem


def _is_network(doc: Any) -> bool:
    return isinstance(doc, Mapping) and "layers" in doc and "network" not in doc


def load_problem(path: str | Path, hardware: str | Path | None = None,
                 objective: str | None = None, nir: NirOptions | None = None) -> Problem:
    """Read a problem from an instance file, or from a network and a hardware file.

    Parameters
    ----------
    path
        An instance YAML/JSON, a network YAML/JSON, or a ``.nir`` file.
    hardware
        The hardware file; required with a network or NIR file, refused with
        an instance (which names its own).
    objective
        ``traffic`` or ``energy``; the instance's own (or ``traffic``) when ``None``.
    nir
        ``T`` and precisions for a NIR file; required for one, refused otherwise.

    Raises
    ------
    StemsInputError
        Every problem found in the files, each naming its file.
    """
    file = str(path)
    if Path(path).suffix.lower() == NIR_SUFFIX:
        if hardware is None or nir is None:
            raise StemsInputError(Issue("a NIR model needs --hardware HW.yaml and --timesteps T "
                                        "(NIR files do not carry a reliable T)", file=file))
        return _combine(path, hardware, objective, lambda: load_nir(path, nir))
    if nir is not None:
        raise StemsInputError(Issue("--timesteps, --weight-bits, --state-bits and --spike-bits "
                                    "apply to NIR models only; a network YAML gives its own",
                                    file=file))
    if hardware is None:
        doc = read_document(path)
        if _is_network(doc):
            raise StemsInputError(Issue("is a network file; give the accelerator with "
                                        "--hardware HW.yaml, or pass an instance file", file=file))
        return load_instance(path, objective)
    doc = read_document(path)
    if not _is_network(doc):
        raise StemsInputError(Issue("--hardware goes with a network file (one with 'layers'); "
                                    "this looks like an instance, which names its own hardware",
                                    file=file, field="hardware"))
    return _combine(path, hardware, objective, lambda: network_from_dict(doc, file))


def _combine(path: str | Path, hardware: str | Path, objective: str | None,
             network: Any) -> Problem:
    """The problem of ``network()`` on ``hardware``; problems of both files reported together."""
    issues: list[Issue] = []
    net = hw = obj = None
    try:
        net = network()
    except StemsInputError as exc:
        issues += exc.issues
    try:
        hw = hardware_from_dict(read_document(hardware), str(hardware))
    except StemsInputError as exc:
        issues += exc.issues
    try:
        obj = Objective(objective or "traffic")
    except ValueError:
        issues.append(Issue(f"unknown objective {objective!r} (traffic, energy)",
                            field="objective"))
    if issues:
        raise StemsInputError(issues)
    assert net is not None and hw is not None and obj is not None
    return Problem(net, hw, obj, f"{Path(path).stem}@{Path(hardware).stem}")


__all__ = ["load_problem"]
