"""The ``stems-opt`` command line: parse, load, solve or score, report.

Exit codes
----------
0    success: the mapping fits (and, for ``solve``, a mapping was found)
1    no mapping fits: an infeasible schedule, mapping or instance
2    bad input or usage: the message names the file, layer and field
3    the solver stopped without finding any mapping (time limit)
4    internal error: a bug in stems_opt (one line; the traceback with ``--debug``)
130  interrupted by Ctrl-C (SIGINT); 143: stopped by SIGTERM. The best mapping so
     far is still printed (and written with ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from stems_opt.version import SCHEMA_VERSION, __version__

if TYPE_CHECKING:
    from stems_opt.errors import Issue
    from stems_opt.mapping import Violation
    from stems_opt.problem import Problem
    from stems_opt.result import Result

if TYPE_CHECKING:
    from stems_opt.stopping import Stop

EXIT_OK, EXIT_INFEASIBLE, EXIT_INPUT, EXIT_NO_ANSWER, EXIT_INTERNAL = 0, 1, 2, 3, 4
DEFAULT_TIME_LIMIT_S = 300.0
"""Wall-clock limit of ``solve`` and ``compare`` unless ``--time-limit`` says otherwise."""
MAX_SEED = 2**31 - 1  # CP-SAT's and HiGHS's random seeds are 32-bit signed integers
MAX_THREADS = 1024



OBJECTIVES = ["traffic", "energy", "latency", "edp"]
OBJECTIVE_UNITS = {"traffic": "bits", "energy": "pJ", "latency": "cycles", "edp": "pJ x cycles"}

def _time_limit(text: str) -> float | None:
    from stems_opt.stopping import parse_time_limit

    try:
        return parse_time_limit(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive, finite number of seconds or 'none', got {text!r}") from None


def _int_in(text: str, low: int, high: int, extra: str = "") -> int:
    """An integer argument in ``low..high``; ``extra`` names other accepted words."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer{extra}, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}{extra}, "
                                         f"got {value}")
    return value


def _threads(text: str) -> int:
    if text.strip().lower() == "auto":
        return os.cpu_count() or 1
    return _int_in(text, 1, MAX_THREADS, " (or 'auto')")


def _seed(text: str) -> int:
    return _int_in(text, 0, MAX_SEED)


def _positive(text: str) -> int:
    return _int_in(text, 1, 2**31 - 1)


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _tiles(text: str) -> int | list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,... got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("tile counts must be >= 1")
    return values[0] if len(values) == 1 else values


def _solver(text: str) -> str:
    if text in ("cpsat", "highs") or (text.startswith("pyomo:") and len(text) > 6):
        return text
    raise argparse.ArgumentTypeError(f"expected cpsat, highs or pyomo:NAME, got {text!r}")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """The problem to read: an instance, or a network (YAML or NIR) with ``--hardware``."""
    p.add_argument("instance", metavar="MODEL",
                   help="instance YAML (network + hardware + objective), or a network YAML or "
                        "NIR file given with --hardware")
    p.add_argument("--hardware", type=_non_empty, metavar="HW.yaml",
                   help="hardware YAML, for a network YAML or NIR file (default: none; an "
                        "instance names its own)")
    _add_nir_args(p, required=False)


def _add_nir_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("NIR models (.nir files)")
    g.add_argument("--timesteps", type=_positive, metavar="T", required=required,
                   help="time window T in timesteps (required for NIR, no default: NIR files "
                        "do not store it reliably)")
    g.add_argument("--weight-bits", type=_positive, default=4, metavar="B",
                   help="weight precision in bits (default: %(default)s)")
    g.add_argument("--state-bits", type=_positive, default=12, metavar="B",
                   help="bits per neuron state variable; CubaLIF keeps two (default: "
                        "%(default)s)")
    g.add_argument("--spike-bits", type=_positive, default=1, metavar="B",
                   help="spike and network-input precision in bits (default: %(default)s)")


def _add_objective(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="minimise DRAM traffic (bits), energy (pJ), latency (cycles) or the "
                        "energy-delay product edp (pJ x cycles) (default: the instance's "
                        "objective; traffic for a network with --hardware)")


def _add_solver(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", type=_solver, default="cpsat", metavar="SOLVER",
                   help="MIP backend: cpsat (OR-Tools CP-SAT), highs, or pyomo:NAME for any MILP "
                        "solver Pyomo drives, e.g. pyomo:appsi_highs, pyomo:cbc, pyomo:gurobi "
                        "(needs the pyomo extra) (default: %(default)s)")


def _nir_options(args: argparse.Namespace) -> object:
    """NIR options when ``--timesteps`` was given (or a bit width changed), else ``None``."""
    from stems_opt.nir_import import NirOptions

    if args.timesteps is None and (args.weight_bits, args.state_bits, args.spike_bits) == \
            (4, 12, 1):
        return None
    if args.timesteps is None:
        from stems_opt.errors import Issue, StemsInputError

        raise StemsInputError(Issue("--weight-bits, --state-bits and --spike-bits need "
                                    "--timesteps T (they apply to NIR models)",
                                    field="timesteps"))
    return NirOptions(args.timesteps, args.weight_bits, args.state_bits, args.spike_bits)


def _load(args: argparse.Namespace, objective: str | None = None) -> object:
    """The problem named on the command line (see :mod:`stems_opt.sources`)."""
    from stems_opt.sources import load_problem

    return load_problem(args.instance, args.hardware, objective,
                        _nir_options(args))  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (no heavy imports)."""
    p = argparse.ArgumentParser(
        prog="stems-opt",
        description="Provably optimal mappings of spiking neural networks onto accelerators.",
        epilog="Exit codes: 0 ok, 1 infeasible, 2 bad input, 3 no mapping found in time. "
               "Units: bits, pJ, seconds (docs/formats.md).")
    p.add_argument("--version", action="version", version=f"stems-opt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true",
                        help="no progress lines on stderr (errors are still reported) "
                             "(default: progress shown)")
    common.add_argument("--debug", action="store_true",
                        help="show the full traceback of an internal error (default: one line)")

    ev = sub.add_parser("evaluate", help="score a named schedule or a mapping file",
                        parents=[common])
    _add_model_args(ev)
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--schedule", type=_non_empty,
                     help="named schedule: ST-LBL, TB-LBL, TB-F, ST-F or HYBRID:<time>:<depth> "
                          "(no default)")
    src.add_argument("--mapping", type=_non_empty,
                     help="mapping YAML or JSON file (no default)")
    ev.add_argument("--tiles", type=_tiles, help="tile count for fused blocks, N or N,N,... "
                    "(default: the schedule's own choice)")
    _add_objective(ev)
    _result_options(ev, "the scored mapping")

    va = sub.add_parser("validate", help="report every problem in an instance (and mapping)",
                        parents=[common])
    _add_model_args(va)
    va.add_argument("--mapping", type=_non_empty,
                    help="also check this mapping file (default: none)")

    so = sub.add_parser("solve", help="find the optimal mapping, with a proof",
                        parents=[common])
    _add_model_args(so)
    _add_objective(so)
    _add_solver(so)
    _search_options(so)
    _result_options(so, "the mapping")
    so.add_argument("--method", choices=["columns", "monolithic"], default="columns",
                    help="columns: segment columns priced lazily; monolithic: one MIP over "
                         "every frame; both exact (default: %(default)s)")
    so.add_argument("--write-model", type=_non_empty, metavar="FILE.lp|FILE.mps",
                    help="also write the monolithic MIP (as --method monolithic builds it) "
                         "to an LP or MPS file (default: not written)")

    co = sub.add_parser("compare", help="the optimum beside the named schedules",
                        parents=[common])
    _add_model_args(co)
    _add_objective(co)
    _add_solver(co)
    _search_options(co)
    co.add_argument("--schedules", default="ST-LBL,TB-LBL,TB-F,ST-F",
                    help="comma-separated schedule names (default: %(default)s)")
    co.add_argument("--json", action="store_true", help="print one JSON object of documents "
                    "(default: a table)")
    co.add_argument("--heuristics", default="greedy-fusion,local-search",
                    help="comma-separated heuristics beside the named schedules "
                         "(greedy-fusion, local-search; '' for none) (default: %(default)s)")
    co.add_argument("--plot", help="draw traffic by tensor class per schedule to this file "
                    "(default: no plot)")

    cv = sub.add_parser("convert", help="write a NIR model as a network YAML", parents=[common])
    cv.add_argument("nir", metavar="MODEL.nir", help="NIR file (snnTorch, SpikingJelly, Norse, "
                    "Sinabs, Lava-dl, ... exports)")
    cv.add_argument("-o", "--out", required=True, type=_non_empty, metavar="NETWORK.yaml",
                    help="network YAML to write (never overwritten without --force)")
    cv.add_argument("--force", action="store_true", help="replace an existing --out file "
                    "(default: refuse)")
    _add_nir_args(cv, required=True)

    sw = sub.add_parser("sweep", help="solve a grid of instances (e.g. buffer sizes) to CSV",
                        parents=[common])
    sw.add_argument("sweep", help="sweep YAML (networks, hardware, global_buffer_sizes, ...)")
    sw.add_argument("--out", type=_non_empty,
                    help="results CSV (default: the sweep file with .csv)")
    sw.add_argument("--plot", help="draw the ski-slope plot to this PNG/PDF/SVG file "
                    "(default: no plot)")
    sw.add_argument("--resume", action="store_true",
                    help="keep the rows in --out, solve the rest (default: refuse an existing "
                         "--out)")
    sw.add_argument("--workers", type=_positive, default=None, metavar="N",
                    help="points solved at once (default: one per core)")
    sw.add_argument("--dask", metavar="ADDRESS",
                    help="run on a dask.distributed scheduler at ADDRESS, or 'local' "
                         "(default: local worker processes)")
    _nest_cache_option(sw)

    ad = sub.add_parser("advise-state", help="rank stateful layers by the exact saving of "
                                             "making them stateless", parents=[common])
    ad.add_argument("instance")
    ad.add_argument("--top", type=_positive, default=None, metavar="N",
                    help="candidates shown and layers in the saving curve (default: all)")
    ad.add_argument("--objective", choices=["traffic", "energy"],
                    help="rank by this saving per state bit (default: the instance's)")
    ad.add_argument("--solver", choices=["cpsat", "highs"], default="cpsat",
                    help="exact backend (default: %(default)s)")
    ad.add_argument("--time-limit", type=_time_limit, default=None, metavar="S",
                    help="seconds per solve, or 'none' (default: none; each candidate is "
                         "solved for traffic and for energy)")
    ad.add_argument("--plot", help="draw the saving curve to this file (default: no plot)")
    return p


def _result_options(p: argparse.ArgumentParser, written: str) -> None:
    """``--json``, ``--out`` and ``--show-loops``: how a scored result is reported."""
    p.add_argument("--json", action="store_true", help="print one JSON document "
                   "(docs/result-schema.json) instead of tables (default: tables)")
    p.add_argument("--out", type=_non_empty, metavar="FILE",
                   help=f"write {written} to this YAML/JSON file (default: not written)")
    p.add_argument("--show-loops", metavar="LAYER", type=_non_empty,
                   help="also print the loop nest each step of LAYER runs (the mapping's, "
                        "else the objective's) "
                        "(default: not printed)")


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-limit", type=_time_limit, default=DEFAULT_TIME_LIMIT_S, metavar="S",
                   help="wall-clock seconds for the whole search, or 'none' "
                        f"(default: {DEFAULT_TIME_LIMIT_S:g})")
    p.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="solver threads, 1..1024 or 'auto' (one per core) (default: 1; "
                        "only an explicit 1 also keeps loop nests off a second core)")
    p.add_argument("--seed", type=_seed, default=0, metavar="N",
                   help=f"solver random seed, 0..{MAX_SEED} (default: 0)")
    p.add_argument("--max-segment-layers", type=_positive, default=None, metavar="N",
                   help="search only segments of at most N layers: a smaller space, "
                        "optimal within the cap (default: the instance's "
                        "options.max_segment_layers, else no cap)")
    _nest_cache_option(p)


def _nest_cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nest-cache", type=_non_empty, metavar="DIR|off",
                   help="directory keeping solved loop-nest energies between runs (they "
                        "depend on the hardware below the global buffer alone), or 'off' "
                        "(default: $STEMS_OPT_CACHE_DIR, else $XDG_CACHE_HOME/stems_opt, "
                        "else ~/.cache/stems_opt)")


def _nest_dir(args: argparse.Namespace) -> Path | None:
    """The ``--nest-cache`` directory (``None``: ``off``)."""
    from stems_opt.cost.nest_store import chosen_dir
    from stems_opt.errors import Issue, StemsInputError

    directory = chosen_dir(args.nest_cache)
    if args.nest_cache is not None and directory is not None and directory.exists() \
            and not directory.is_dir():
        raise StemsInputError(Issue("is not a directory", file=args.nest_cache,
                                    field="nest-cache"))
    return directory


def _nest_table(problem: Problem, directory: Path | None
                ) -> contextlib.AbstractContextManager[None]:
    """Keeps the nest table of ``problem``'s hardware in ``directory`` (loaded on
    entry, saved on exit); nothing for hardware without loop nests or with ``off``."""
    from stems_opt.cost import nest_store

    return nest_store.kept(directory, nest_store.hardware_of(problem.hardware))


def _capped(problem: Problem, args: argparse.Namespace) -> Problem:
    """``problem`` with ``--max-segment-layers`` as its cap, when given."""
    cap = args.max_segment_layers
    return problem if cap is None else dataclasses.replace(problem, max_segment_layers=cap)


def _emit(doc: object, as_json: bool, text: str) -> None:
    """Print the result; a reader that went away (``| head``) does not change the
    exit code, which still says what happened."""
    try:
        if as_json:
            json.dump(doc, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Later writes (and the flush at exit) go nowhere instead of failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _violation_issues(violations: Iterable[Violation], file: str) -> list[Issue]:
    """Mapping violations as input issues, each naming the mapping file once.

    ``str(Violation)`` already carries the segment, layer and field, so only
    the bare message goes into the issue, which adds the location itself.
    """
    from stems_opt.errors import Issue

    return [Issue(v.message, file=file, layer=v.layer, field=v.field, segment=v.segment)
            for v in violations]


def _exit_for(result: object) -> int:
    from stems_opt.result import SolveStatus

    status = getattr(result, "status", None)
    if status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return EXIT_OK
    if status is SolveStatus.INFEASIBLE:
        return EXIT_INFEASIBLE
    return EXIT_NO_ANSWER


def _check_show_loops(problem: Problem, args: argparse.Namespace) -> None:
    """A ``--show-loops`` layer must exist (checked before any solving)."""
    from stems_opt.errors import Issue, StemsInputError

    name = getattr(args, "show_loops", None)
    if name and not problem.network.has_layer(name):
        raise StemsInputError(Issue(f"no layer {name!r} in network {problem.network.name!r}",
                                    field="show-loops"))


def _with_loops(problem: Problem, result: Result, args: argparse.Namespace
                ) -> tuple[object, bool, str]:
    """What :func:`_emit` prints, with ``--show-loops`` added when asked."""
    from stems_opt.report import format_result, result_to_dict

    doc, text = result_to_dict(problem, result), format_result(problem, result)
    if getattr(args, "show_loops", None) and result.mapping is not None:
        from stems_opt.nest_report import show_loops

        loops_text, loops_doc = show_loops(problem, result.mapping, args.show_loops)
        doc["loops"] = loops_doc
        text += "\n\n" + loops_text
    return doc, args.json, text


def _evaluate(args: argparse.Namespace) -> int:
    from stems_opt.cost.evaluation import evaluate
    from stems_opt.errors import Issue, StemsInputError
    from stems_opt.feasibility import check
    from stems_opt.heuristics import named_schedule
    from stems_opt.io import check_writable, dump_mapping, load_mapping
    from stems_opt.report import mapping_provenance, mapping_with_nests
    from stems_opt.result import Result, SolveStatus

    if args.out is not None:  # an empty path is refused, not skipped
        check_writable(args.out, field="out")
    problem = _load(args, args.objective)
    _check_show_loops(problem, args)
    if args.schedule:
        if args.tiles is not None and args.schedule.upper() in ("ST-LBL", "TB-LBL"):
            raise StemsInputError(Issue(f"--tiles applies to fused blocks; {args.schedule} has "
                                        "none", field="tiles"))
        result = named_schedule(problem, args.schedule, args.tiles)
    else:
        mapping = load_mapping(args.mapping, problem)
        violations = check(problem, mapping)
        hard = [v for v in violations if v.code != "capacity"]
        if hard:
            raise StemsInputError(_violation_issues(hard, args.mapping))
        mapping = mapping.canonical(problem.network)
        cost = evaluate(problem, mapping)
        result = Result(SolveStatus.FEASIBLE if cost.feasible else SolveStatus.INFEASIBLE,
                        solver="mapping", objective=problem.objective.value, mapping=mapping,
                        cost=cost, objective_value=cost.objective_value(
                            problem.objective.value, problem.weights),
                        message="; ".join(str(v) for v in violations))
    # A mapping that does not fit is still written: the user asked for it scored and saved,
    # and the report and the exit code (1) say that it does not fit.
    if args.out is not None and result.mapping is not None:
        dump_mapping(mapping_with_nests(problem, result.mapping), args.out,
                     mapping_provenance(problem, result))
    _emit(*_with_loops(problem, result, args))
    return _exit_for(result)


def _validate(args: argparse.Namespace) -> int:
    from stems_opt.errors import StemsInputError
    from stems_opt.feasibility import check
    from stems_opt.io import load_mapping
    from stems_opt.solvers import explain_infeasible, unfit_layers

    problem = _load(args)
    net = problem.network
    print(f"{args.instance}: network {net.name!r}: {len(net.layers)} layers, T = {net.timesteps}, "
          f"weights {net.weight_size_bits:,} bits, state {net.state_size_bits:,} bits; "
          f"hardware {problem.hardware.name!r}: global buffer "
          f"{problem.hardware.gb_capacity_bits:,} bits")
    if args.mapping:
        violations = check(problem, load_mapping(args.mapping, problem))
        if violations:
            raise StemsInputError(_violation_issues(violations, args.mapping))
        print(f"{args.mapping}: valid, fits the global buffer")
    elif unfit_layers(problem):
        # Well formed, but some layer fits no tiling: the same verdict and words as solve.
        print(f"{args.instance}: infeasible: no mapping fits: {explain_infeasible(problem)}")
        return EXIT_INFEASIBLE
    return EXIT_OK


class _Signals:
    """Ctrl-C and SIGTERM: the first stops the search (the best mapping so far is
    reported), a second exits at once; once the answer is out, the first exits at
    once (what is left is keeping the loop-nest table)."""

    def __init__(self) -> None:
        self.stop: Stop | None = None
        self.signum: int | None = None
        self.answer_out = False

    def reset(self) -> None:
        """Forget a previous run's stop and signal (``main`` may run more than once)."""
        self.stop, self.signum, self.answer_out = None, None, False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def answered(self) -> None:
        """The answer is printed: a signal now cuts short only what follows it."""
        self.answer_out = True

    def handle(self, signum: int, _frame: object) -> None:
        if self.answer_out:
            sys.stdout.flush()  # (an answer printed to a pipe is still buffered)
            print("stems-opt: stopped after the answer; the loop-nest table of this run "
                  "is not kept", file=sys.stderr, flush=True)
            os._exit(128 + signum)
            return  # (only where os._exit is replaced, as in the tests)
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum
        if self.stop is None:
            raise KeyboardInterrupt
        print("stems-opt: stopping: finishing with the best mapping so far "
              "(press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
        self.stop.request()

    def exit_code(self, code: int) -> int:
        """``code``, or 128 + the signal number once a signal stopped the run."""
        return code if self.signum is None else 128 + self.signum


SIGNALS = _Signals()


def _new_stop(time_limit_s: float | None) -> Stop:
    from stems_opt.stopping import Stop

    SIGNALS.stop = Stop(time_limit_s)
    return SIGNALS.stop


def _solve(args: argparse.Namespace) -> int:
    from stems_opt.io import check_writable, dump_mapping
    from stems_opt.report import mapping_provenance, mapping_with_nests
    from stems_opt.solvers import check_solver, solve, write_model

    for path, field in ((args.out, "out"), (args.write_model, "write-model")):
        if path:
            check_writable(path, field=field)
    nests = _nest_dir(args)  # (refused before anything is read or written)
    problem = _capped(_load(args, args.objective), args)
    check_solver(args.solver)
    _check_show_loops(problem, args)
    if args.write_model:
        info = write_model(problem, args.write_model)
        unit = OBJECTIVE_UNITS[problem.objective.value]
        print(f"stems-opt: wrote {args.write_model}: {info['variables']:,} binaries, "
              f"{info['constraints']:,} rows; {problem.objective.value} in {unit} = (objective + "
              f"{info['constant']:g}) / {info['scale']:g}", file=sys.stderr)
    stop = _new_stop(args.time_limit)  # (loading the nest table counts in the limit)
    with _nest_table(problem, nests):  # (kept after the answer is printed)
        result = solve(problem, solver=args.solver, time_limit_s=args.time_limit,
                       threads=args.threads, seed=args.seed, method=args.method, stop=stop)
        if args.out is not None and result.mapping is not None:
            dump_mapping(mapping_with_nests(problem, result.mapping), args.out,
                         mapping_provenance(problem, result))
        _emit(*_with_loops(problem, result, args))
        SIGNALS.answered()
    return SIGNALS.exit_code(_exit_for(result))


def _compare(args: argparse.Namespace) -> int:
    from stems_opt.io import check_writable
    from stems_opt.solvers import check_solver

    heuristics = [h.strip() for h in args.heuristics.split(",") if h.strip()]
    unknown = [h for h in heuristics if h not in HEURISTICS]
    if unknown:
        from stems_opt.errors import Issue, StemsInputError

        raise StemsInputError(Issue(f"unknown heuristic(s) {', '.join(unknown)} (one of "
                                    f"{', '.join(HEURISTICS)})", field="heuristics"))
    if args.plot:
        check_writable(args.plot, field="plot")
    nests = _nest_dir(args)  # (refused before anything is read)
    problem = _capped(_load(args, args.objective), args)
    check_solver(args.solver)
    names = tuple(dict.fromkeys(s.strip() for s in args.schedules.split(",") if s.strip()))
    if not names:
        from stems_opt.errors import Issue, StemsInputError

        raise StemsInputError(Issue("no schedule named", field="schedules"))
    stop = _new_stop(args.time_limit)  # (loading the nest table counts in the limit)
    with _nest_table(problem, nests):  # (kept after the answer is printed)
        code = _compare_report(problem, names, heuristics, args, stop)
        SIGNALS.answered()
        return code


def _compare_report(problem: Problem, names: tuple[str, ...], heuristics: list[str],
                    args: argparse.Namespace, stop: Stop) -> int:
    """``compare``'s search, scoring and report."""
    from stems_opt.report import result_to_dict
    from stems_opt.result import Result
    from stems_opt.solvers import solve_and_score

    opt, scored = solve_and_score(problem, names, solver=args.solver,
                                  time_limit_s=args.time_limit, threads=args.threads,
                                  seed=args.seed, stop=stop)
    rows: list[tuple[str, Result | str | None]] = list(scored.items())
    rows += _heuristic_rows(problem, heuristics, rows, opt.runtime_s, args.seed,
                            SIGNALS.stop)
    rows.append(("optimum" if opt.status.value == "optimal" else "best found", opt))
    if args.plot:
        from stems_opt.plots import tensor_bars_plot

        tensor_bars_plot(f"{problem.name}: off-chip traffic by tensor class",
                         [(name if r.feasible else f"{name}\n(does not fit)",
                           r.cost.traffic.by_class()) for name, r in rows
                          if isinstance(r, Result) and r.cost is not None], args.plot)
    if args.json:
        _emit({name: result_to_dict(problem, r) if isinstance(r, Result) else
               {"schema_version": SCHEMA_VERSION, "stems_opt_version": __version__,
                "instance": problem.name, "status": "not scored",
                "message": r or "the time limit came first"}
               for name, r in rows}, True, "")
        return SIGNALS.exit_code(_exit_for(opt))
    objective = problem.objective.value
    lines = [f"instance {problem.name} ({objective})",
             f"  {'schedule':<14} {'status':<11} {'traffic Mbit':>13} {'energy uJ':>11} "
             f"{'Mcycles':>10} {'x optimum':>10}"]
    best = opt.cost.objective_value(objective) if opt.cost else math.nan
    for name, r in rows:
        if not isinstance(r, Result):
            lines.append(f"  {name:<14} {'not scored':<11} ({r or 'the time limit came first'})")
        elif r.cost is None:
            lines.append(f"  {name:<14} {r.status.value:<11}")
        else:
            ratio = r.cost.objective_value(objective) / best
            lines.append(f"  {name:<14} {r.status.value:<11} {r.cost.traffic_bits / 1e6:>13,.3f} "
                         f"{r.cost.total_energy_pj / 1e6:>11,.3f} "
                         f"{r.cost.latency_cycles / 1e6:>10,.3f} {ratio:>10.3f}")
    if opt.status.value != "optimal" and opt.bound is not None:
        lines.append(f"  (not proven: bound {opt.bound:,.6g}, gap {opt.gap:.2%})"
                     if opt.gap is not None else f"  (not proven: bound {opt.bound:,.6g})")
    if args.plot:
        lines.append(f"plot written to {args.plot}")
    _emit(None, False, "\n".join(lines))
    return SIGNALS.exit_code(_exit_for(opt))


def _convert(args: argparse.Namespace) -> int:
    import yaml

    from stems_opt.errors import Issue, StemsInputError
    from stems_opt.io import check_writable, network_from_dict, write_text_safely
    from stems_opt.nir_import import read_nir_document

    check_writable(args.out, field="out")
    if Path(args.out).exists() and not args.force:
        raise StemsInputError(Issue("exists; not overwritten (use --force to replace it)",
                                    file=args.out, field="out"))
    doc = read_nir_document(args.nir, _nir_options(args))  # type: ignore[arg-type]
    net = network_from_dict(doc, args.nir)  # the written file must load as it is
    head = (f"# Network converted from {Path(args.nir).name} by `stems-opt convert`:\n"
            f"# T = {net.timesteps}, weights {args.weight_bits} bits, neuron state "
            f"{args.state_bits} bits per variable, spikes {args.spike_bits} bit(s).\n")
    write_text_safely(args.out, head + yaml.safe_dump(doc, sort_keys=False,
                                                      default_flow_style=None, width=100))
    print(f"{args.out}: network {net.name!r}, {len(net.layers)} layers, weights "
          f"{net.weight_size_bits:,} bits, state {net.state_size_bits:,} bits")
    return EXIT_OK


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to ``sys.stderr`` as it is when a line is emitted: a program
    that runs :func:`main` and later replaces or closes that stream (a test runner
    capturing output) does not get errors from a stream it closed."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _configure_logging(quiet: bool) -> None:
    """Progress lines on stderr, unless ``--quiet``; stdout stays the result alone."""
    log = logging.getLogger("stems_opt")
    log.handlers.clear()
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("stems-opt: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    # Detailed search traces stay at DEBUG: only the progress lines show at INFO.
    logging.getLogger("stems_opt.columns").setLevel(logging.WARNING)


HEURISTICS = ("greedy-fusion", "local-search")


def _heuristic_rows(problem: object, heuristics: list[str],
                    named: list[tuple[str, object]], solver_s: float, seed: int,
                    stop: Stop | None) -> list[tuple[str, object]]:
    """The greedy fusion, and a local search from the best mapping so far given the
    solver's wall time, both within what is left of the time limit (a heuristic the
    limit stops is "not scored")."""
    from stems_opt.heuristics.greedy import greedy_fusion
    from stems_opt.heuristics.local_search import local_search
    from stems_opt.result import Result

    deadline = None if stop is None else stop.deadline
    rows: list[tuple[str, object]] = []
    if "greedy-fusion" in heuristics:
        if stop is not None and stop.expired():
            rows.append(("GREEDY-FUSION", None))
        else:
            r = greedy_fusion(problem, deadline=deadline)  # type: ignore[arg-type]
            rows.append(("GREEDY-FUSION", r if r.mapping is not None or
                         r.status.value == "infeasible" else r.message))
    if "local-search" in heuristics:
        if stop is not None and stop.expired():
            rows.append(("LOCAL-SEARCH", None))
        else:
            fitting = [r for _, r in named + rows if isinstance(r, Result) and r.feasible]
            start = min(fitting, key=lambda r: r.objective_value).mapping if fitting else None
            budget = solver_s if stop is None else stop.limit_s(solver_s)
            rows.append(("LOCAL-SEARCH", local_search(  # type: ignore[arg-type]
                problem, seed=seed, time_limit_s=budget, start=start)))
    return rows


def _sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stems_opt.io import check_writable
    from stems_opt.sweep import available_cores, dask_client, load_sweep, local_executor, run_sweep

    cores = available_cores()
    workers = args.workers or cores
    if not args.dask and workers > cores:
        print(f"stems-opt: {workers} workers on {cores} cores would oversubscribe them; "
              f"using {cores}", file=sys.stderr)
        workers = cores
    # Workers x solver threads stay within the cores.
    threads = max(1, cores // workers)
    out = args.out or str(Path(args.sweep).with_suffix(".csv"))
    if args.plot:
        check_writable(args.plot, field="plot")
    nests = _nest_dir(args)
    sweep = load_sweep(args.sweep, threads=threads)
    if nests is not None:  # (every point keeps its nests there: larger sizes run first;
        # an absolute path, the same on every worker's file system)
        sweep = dataclasses.replace(sweep, points=tuple(
            dataclasses.replace(p, nest_cache=str(nests.resolve())) for p in sweep.points))
    client = dask_client(args.dask, workers) if args.dask else None
    try:
        if client is not None:
            executor = client.get_executor(pure=False)
        else:
            executor = local_executor(workers) if workers > 1 and len(sweep.points) > 1 else None
        try:
            rows = run_sweep(sweep, out, executor, resume=args.resume)
        finally:
            if executor is not None:
                executor.shutdown(wait=False)
    except KeyboardInterrupt:
        print(f"stems-opt: interrupted; the finished points are in {out} (--resume continues)",
              file=sys.stderr)
        return 130
    finally:
        if client is not None:
            client.close()
    print(f"{len(rows)} points written to {out}")
    from stems_opt.size_bounds import size_envelope

    slope = size_envelope(rows)
    if args.plot:
        from stems_opt.plots import skislope_plot

        skislope_plot(slope, args.plot)
        print(f"ski-slope plot written to {args.plot} (bounds and mappings combined "
              "across buffer sizes)")
    unproven = sum(r["status"] != "optimal" for r in rows)
    combined = sum(r["status"] != "optimal" for r in slope)
    if unproven:
        print(f"{unproven} points not proven optimal by their own solve (see their bound "
              f"and gap); {unproven - combined} of them proven with the bounds and "
              "mappings of other buffer sizes")
    return EXIT_OK


def _advise_state(args: argparse.Namespace) -> int:
    from stems_opt.advise import advise_state, format_advice
    from stems_opt.io import check_writable, load_instance

    if args.plot:
        check_writable(args.plot, field="plot")
    problem = load_instance(args.instance, args.objective)
    try:
        advice = advise_state(problem, top=args.top, solver=args.solver,
                              time_limit_s=args.time_limit)
    except ValueError as exc:
        print(f"stems-opt: {exc}", file=sys.stderr)
        return EXIT_INFEASIBLE
    print(format_advice(problem, advice, args.top))
    if args.plot:
        from stems_opt.plots import saving_curve_plot

        base = advice.base
        points = [(0, base.traffic_bits, base.energy_pj, base.proven)] + [
            (p.state_bits_removed, p.optima.traffic_bits, p.optima.energy_pj, p.optima.proven)
            for p in advice.curve]
        saving_curve_plot(f"{problem.name}: ranked layers made stateless", points, args.plot)
        print(f"plot written to {args.plot}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    from stems_opt.errors import StemsInputError

    _configure_logging(args.quiet)
    SIGNALS.reset()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        SIGNALS.install()
    try:
        return {"evaluate": _evaluate, "validate": _validate, "solve": _solve,
                "compare": _compare, "convert": _convert, "sweep": _sweep,
                "advise-state": _advise_state}[args.command](args)
    except StemsInputError as exc:
        for issue in exc.issues:
            print(f"stems-opt: error: {issue}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:  # the reader went away before the result was complete
        return EXIT_OK
    except KeyboardInterrupt:
        print("stems-opt: interrupted", file=sys.stderr)
        return SIGNALS.exit_code(128 + signal.SIGINT)
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"stems-opt: internal error: {type(exc).__name__}: {_excerpt(str(exc))}"
              + ("" if args.debug else " (run again with --debug for the traceback)"),
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        SIGNALS.stop = None
        if in_main_thread:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])


FAST_EXIT = frozenset({"solve", "compare", "evaluate"})
"""Commands whose process ends without the interpreter's teardown (:func:`run`): after
a search over SEW-ResNet-152's 60,000 columns, freeing them took 0.6 s after the
answer was printed. Their second process is stopped before (``BackgroundNamed``), and
every file they write is closed; the sweep's Dask workers need the normal exit."""


def run() -> None:
    """The ``stems-opt`` program: :func:`main`, then the process ends with its exit
    code (at once after :data:`FAST_EXIT` commands, their output flushed)."""
    code = main()
    if len(sys.argv) > 1 and sys.argv[1] in FAST_EXIT:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # (a reader gone: its code stays)
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _excerpt(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


if __name__ == "__main__":
    run()
