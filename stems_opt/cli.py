"""The ``stems-opt`` command line: parse, load, solve or score, report.

Exit codes
----------
0  success: the mapping fits (and, for ``solve``, a mapping was found)
1  no mapping fits: an infeasible schedule, mapping or instance
2  bad input or usage: the message names the file, layer and field
3  the solver stopped without finding any mapping (time limit)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stems_opt.errors import Issue
    from stems_opt.mapping import Violation

EXIT_OK, EXIT_INFEASIBLE, EXIT_INPUT, EXIT_NO_ANSWER = 0, 1, 2, 3


def _tiles(text: str) -> int | list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,... got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("tile counts must be >= 1")
    return values[0] if len(values) == 1 else values


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (no heavy imports)."""
    p = argparse.ArgumentParser(
        prog="stems-opt",
        description="Provably optimal mappings of spiking neural networks onto accelerators.",
        epilog="Exit codes: 0 ok, 1 infeasible, 2 bad input, 3 no mapping found in time.")
    sub = p.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="score a named schedule or a mapping file")
    ev.add_argument("instance", help="instance YAML (network + hardware + objective)")
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--schedule", help="ST-LBL, TB-LBL, TB-F, ST-F or HYBRID:<time>:<depth>")
    src.add_argument("--mapping", help="mapping YAML or JSON file")
    ev.add_argument("--tiles", type=_tiles, help="tile count for fused blocks (N or N,N,...)")
    ev.add_argument("--objective", choices=["traffic", "energy"])
    ev.add_argument("--json", action="store_true", help="print one JSON document")
    ev.add_argument("--out", help="write the scored mapping to this YAML/JSON file")

    va = sub.add_parser("validate", help="report every problem in an instance (and mapping)")
    va.add_argument("instance")
    va.add_argument("--mapping", help="also check this mapping")

    so = sub.add_parser("solve", help="find the optimal mapping, with a proof")
    so.add_argument("instance")
    so.add_argument("--objective", choices=["traffic", "energy"])
    so.add_argument("--solver", choices=["cpsat", "highs"], default="cpsat")
    so.add_argument("--time-limit", type=float, default=None, metavar="S")
    so.add_argument("--threads", type=int, default=None, metavar="N")
    so.add_argument("--seed", type=int, default=0, metavar="N")
    so.add_argument("--json", action="store_true", help="print one JSON document")
    so.add_argument("--out", help="write the mapping to this YAML/JSON file")

    co = sub.add_parser("compare", help="the optimum beside the named schedules")
    co.add_argument("instance")
    co.add_argument("--objective", choices=["traffic", "energy"])
    co.add_argument("--solver", choices=["cpsat", "highs"], default="cpsat")
    co.add_argument("--time-limit", type=float, default=None, metavar="S")
    co.add_argument("--schedules", default="ST-LBL,TB-LBL,TB-F,ST-F",
                    help="comma-separated schedule names")
    co.add_argument("--json", action="store_true")
    return p


def _emit(doc: object, as_json: bool, text: str) -> None:
    if as_json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(text)


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


def _evaluate(args: argparse.Namespace) -> int:
    from stems_opt.cost_model import evaluate
    from stems_opt.errors import Issue, StemsInputError
    from stems_opt.heuristics import named_schedule
    from stems_opt.io import check_writable, dump_mapping, load_instance, load_mapping
    from stems_opt.mapping import check
    from stems_opt.report import format_result, result_to_dict
    from stems_opt.result import Result, SolveStatus

    if args.out is not None:  # an empty path is refused, not skipped
        check_writable(args.out, field="out")
    problem = load_instance(args.instance, args.objective)
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
                        cost=cost, objective_value=cost.objective_value(problem.objective.value),
                        message="; ".join(str(v) for v in violations))
    # A mapping that does not fit is still written: the user asked for it scored and saved,
    # and the report and the exit code (1) say that it does not fit.
    if args.out is not None and result.mapping is not None:
        dump_mapping(result.mapping, args.out)
    _emit(result_to_dict(problem, result), args.json, format_result(problem, result))
    return _exit_for(result)


def _validate(args: argparse.Namespace) -> int:
    from stems_opt.errors import StemsInputError
    from stems_opt.io import load_instance, load_mapping
    from stems_opt.mapping import check
    from stems_opt.solvers import explain_infeasible, unfit_layers

    problem = load_instance(args.instance)
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


def _solve(args: argparse.Namespace) -> int:
    from stems_opt.io import check_writable, dump_mapping, load_instance
    from stems_opt.report import format_result, result_to_dict
    from stems_opt.solvers import solve

    if args.out is not None:  # an empty path is refused, not skipped
        check_writable(args.out, field="out")
    problem = load_instance(args.instance, args.objective)
    result = solve(problem, solver=args.solver, time_limit_s=args.time_limit,
                   threads=args.threads, seed=args.seed)
    if args.out is not None and result.mapping is not None:
        dump_mapping(result.mapping, args.out)
    _emit(result_to_dict(problem, result), args.json, format_result(problem, result))
    return _exit_for(result)


def _compare(args: argparse.Namespace) -> int:
    from stems_opt.heuristics import named_schedule
    from stems_opt.io import load_instance
    from stems_opt.report import result_to_dict
    from stems_opt.solvers import solve

    problem = load_instance(args.instance, args.objective)
    opt = solve(problem, solver=args.solver, time_limit_s=args.time_limit)
    rows = []
    for name in [s.strip() for s in args.schedules.split(",") if s.strip()]:
        r = named_schedule(problem, name)
        rows.append((name, r))
    rows.append(("optimum" if opt.status.value == "optimal" else "best found", opt))
    if args.json:
        _emit({name: result_to_dict(problem, r) for name, r in rows}, True, "")
    else:
        print(f"instance {problem.name} ({problem.objective.value})")
        print(f"  {'schedule':<14} {'status':<11} {'traffic Mbit':>13} {'energy uJ':>11} "
              f"{'x optimum':>10}")
        for name, r in rows:
            if r.cost is None:
                print(f"  {name:<14} {r.status.value:<11}")
                continue
            ratio = r.cost.objective_value(problem.objective.value) / \
                opt.cost.objective_value(problem.objective.value) if opt.cost else float("nan")
            print(f"  {name:<14} {r.status.value:<11} {r.cost.traffic_bits / 1e6:>13,.3f} "
                  f"{r.cost.total_energy_pj / 1e6:>11,.3f} {ratio:>10.3f}")
    return _exit_for(opt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    from stems_opt.errors import StemsInputError

    try:
        return {"evaluate": _evaluate, "validate": _validate, "solve": _solve,
                "compare": _compare}[args.command](args)
    except StemsInputError as exc:
        for issue in exc.issues:
            print(f"stems-opt: error: {issue}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
