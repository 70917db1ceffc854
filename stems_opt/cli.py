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
import json
import logging
import math
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stems_opt.errors import Issue
    from stems_opt.mapping import Violation

if TYPE_CHECKING:
    from stems_opt.stopping import Stop

EXIT_OK, EXIT_INFEASIBLE, EXIT_INPUT, EXIT_NO_ANSWER, EXIT_INTERNAL = 0, 1, 2, 3, 4
DEFAULT_TIME_LIMIT_S = 300.0
"""Wall-clock limit of ``solve`` and ``compare`` unless ``--time-limit`` says otherwise."""
MAX_SEED = 2**31 - 1  # CP-SAT's and HiGHS's random seeds are 32-bit signed integers
MAX_THREADS = 1024


def _time_limit(text: str) -> float | None:
    from stems_opt.stopping import parse_time_limit

    try:
        return parse_time_limit(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive, finite number of seconds or 'none', got {text!r}") from None


def _threads(text: str) -> int:
    if text.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_THREADS} (or 'auto'), "
                                         f"got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, got {value}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (no heavy imports)."""
    p = argparse.ArgumentParser(
        prog="stems-opt",
        description="Provably optimal mappings of spiking neural networks onto accelerators.",
        epilog="Exit codes: 0 ok, 1 infeasible, 2 bad input, 3 no mapping found in time.")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true",
                        help="no progress lines on stderr (errors are still reported)")
    common.add_argument("--debug", action="store_true",
                        help="show the full traceback of an internal error")

    ev = sub.add_parser("evaluate", help="score a named schedule or a mapping file",
                        parents=[common])
    ev.add_argument("instance", help="instance YAML (network + hardware + objective)")
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--schedule", type=_non_empty,
                     help="ST-LBL, TB-LBL, TB-F, ST-F or HYBRID:<time>:<depth>")
    src.add_argument("--mapping", type=_non_empty, help="mapping YAML or JSON file")
    ev.add_argument("--tiles", type=_tiles, help="tile count for fused blocks (N or N,N,...)")
    ev.add_argument("--objective", choices=["traffic", "energy"])
    ev.add_argument("--json", action="store_true", help="print one JSON document")
    ev.add_argument("--out", type=_non_empty,
                    help="write the scored mapping to this YAML/JSON file")

    va = sub.add_parser("validate", help="report every problem in an instance (and mapping)",
                        parents=[common])
    va.add_argument("instance")
    va.add_argument("--mapping", type=_non_empty, help="also check this mapping")

    so = sub.add_parser("solve", help="find the optimal mapping, with a proof",
                        parents=[common])
    so.add_argument("instance")
    so.add_argument("--objective", choices=["traffic", "energy"])
    so.add_argument("--solver", choices=["cpsat", "highs"], default="cpsat")
    _search_options(so)
    so.add_argument("--json", action="store_true", help="print one JSON document")
    so.add_argument("--out", type=_non_empty, help="write the mapping to this YAML/JSON file")

    co = sub.add_parser("compare", help="the optimum beside the named schedules",
                        parents=[common])
    co.add_argument("instance")
    co.add_argument("--objective", choices=["traffic", "energy"])
    co.add_argument("--solver", choices=["cpsat", "highs"], default="cpsat")
    _search_options(co)
    co.add_argument("--schedules", default="ST-LBL,TB-LBL,TB-F,ST-F",
                    help="comma-separated schedule names")
    co.add_argument("--json", action="store_true")
    return p


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time-limit", type=_time_limit, default=DEFAULT_TIME_LIMIT_S, metavar="S",
                   help="wall-clock seconds for the whole search, or 'none' "
                        f"(default: {DEFAULT_TIME_LIMIT_S:g})")
    p.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="solver threads, 1..1024 or 'auto' (one per core) (default: 1)")
    p.add_argument("--seed", type=_seed, default=0, metavar="N",
                   help=f"solver random seed, 0..{MAX_SEED} (default: 0)")


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


class _Signals:
    """Ctrl-C and SIGTERM: the first stops the search (the best mapping so far is
    reported), a second exits at once."""

    def __init__(self) -> None:
        self.stop: Stop | None = None
        self.signum: int | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum: int, _frame: object) -> None:
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
    from stems_opt.io import check_writable, dump_mapping, load_instance
    from stems_opt.report import format_result, result_to_dict
    from stems_opt.solvers import solve

    if args.out is not None:  # an empty path is refused, not skipped
        check_writable(args.out, field="out")
    problem = load_instance(args.instance, args.objective)
    result = solve(problem, solver=args.solver, time_limit_s=args.time_limit,
                   threads=args.threads, seed=args.seed, stop=_new_stop(args.time_limit))
    if args.out is not None and result.mapping is not None:
        dump_mapping(result.mapping, args.out)
    _emit(result_to_dict(problem, result), args.json, format_result(problem, result))
    return SIGNALS.exit_code(_exit_for(result))


def _compare(args: argparse.Namespace) -> int:
    from stems_opt.io import load_instance
    from stems_opt.report import result_to_dict
    from stems_opt.result import Result
    from stems_opt.solvers import solve_and_score

    problem = load_instance(args.instance, args.objective)
    names = tuple(dict.fromkeys(s.strip() for s in args.schedules.split(",") if s.strip()))
    if not names:
        from stems_opt.errors import Issue, StemsInputError

        raise StemsInputError(Issue("no schedule named", field="schedules"))
    opt, scored = solve_and_score(problem, names, solver=args.solver,
                                  time_limit_s=args.time_limit, threads=args.threads,
                                  seed=args.seed, stop=_new_stop(args.time_limit))
    rows: list[tuple[str, Result | str | None]] = list(scored.items())
    rows.append(("optimum" if opt.status.value == "optimal" else "best found", opt))
    if args.json:
        _emit({name: result_to_dict(problem, r) if isinstance(r, Result) else
               {"status": "not scored", "message": r or "the time limit came first"}
               for name, r in rows}, True, "")
        return SIGNALS.exit_code(_exit_for(opt))
    objective = problem.objective.value
    lines = [f"instance {problem.name} ({objective})",
             f"  {'schedule':<14} {'status':<11} {'traffic Mbit':>13} {'energy uJ':>11} "
             f"{'x optimum':>10}"]
    best = opt.cost.objective_value(objective) if opt.cost else math.nan
    for name, r in rows:
        if not isinstance(r, Result):
            lines.append(f"  {name:<14} {'not scored':<11} ({r or 'the time limit came first'})")
        elif r.cost is None:
            lines.append(f"  {name:<14} {r.status.value:<11}")
        else:
            ratio = r.cost.objective_value(objective) / best
            lines.append(f"  {name:<14} {r.status.value:<11} {r.cost.traffic_bits / 1e6:>13,.3f} "
                         f"{r.cost.total_energy_pj / 1e6:>11,.3f} {ratio:>10.3f}")
    if opt.status.value != "optimal" and opt.bound is not None:
        lines.append(f"  (not proven: bound {opt.bound:,.6g}, gap {opt.gap:.2%})"
                     if opt.gap is not None else f"  (not proven: bound {opt.bound:,.6g})")
    _emit(None, False, "\n".join(lines))
    return SIGNALS.exit_code(_exit_for(opt))


def _configure_logging(quiet: bool) -> None:
    """Progress lines on stderr, unless ``--quiet``; stdout stays the result alone."""
    log = logging.getLogger("stems_opt")
    log.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("stems-opt: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    # Detailed search traces stay at DEBUG: only the progress lines show at INFO.
    logging.getLogger("stems_opt.columns").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    from stems_opt.errors import StemsInputError

    _configure_logging(args.quiet)
    SIGNALS.__init__()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        SIGNALS.install()
    try:
        return {"evaluate": _evaluate, "validate": _validate, "solve": _solve,
                "compare": _compare}[args.command](args)
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


def _excerpt(text: str, limit: int = 300) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
