"""Plots (matplotlib, the ``plots`` extra, imported only when a plot is drawn)."""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stems_opt.errors import Issue, StemsInputError

NAMED_STYLES = {"ST-LBL": ":", "TB-LBL": "--", "TB-F": "-.", "ST-F": (0, (3, 1, 1, 1, 1, 1))}



PLOT_UNITS = {"traffic": ("off-chip traffic", 1e6, "Mbit"), "energy": ("energy", 1e6, "µJ"),
              "latency": ("latency", 1e6, "Mcycles"), "edp": ("EDP", 1e12, "µJ x Mcycles")}
"""Per objective: axis label, divisor and unit of the sweep plot."""

def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise StemsInputError(Issue("plots need matplotlib: pip install 'stems-opt[plots]'",
                                    field="plot")) from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    from stems_opt.io import check_writable

    check_writable(path, field="plot")
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except (OSError, ValueError) as exc:
        raise StemsInputError(Issue(f"cannot be written: {exc}", file=str(path),
                                    field="plot")) from None
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def skislope_plot(rows: Sequence[AbcMapping[str, str]], path: str | Path) -> None:
    """Optimal objective against global-buffer size, one panel per network and objective.

    Log-log axes; the proven optimum as a solid line (a bar from bound to
    incumbent where the point is not proven), the best named schedule and each
    named schedule beside it, and the compulsory traffic (traffic only) as the
    floor no buffer can go below.
    """
    from stems_opt.sweep import NAMED_COLUMNS

    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    panels: dict[tuple[str, str], list[AbcMapping[str, str]]] = {}
    for r in rows:
        panels.setdefault((r["network"], r["objective"]), []).append(r)
    if not panels:
        raise StemsInputError(Issue("no points to plot", field="plot"))
    cols = min(len(panels), 4)
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows + 0.6),
                             squeeze=False, layout="constrained")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax, ((net, obj), pts) in zip(axes.flat, panels.items(), strict=False):
        pts = sorted(pts, key=lambda r: int(r["gb_capacity_bits"]))
        label, scale, unit = PLOT_UNITS.get(obj, ("energy", 1e6, "µJ"))
        kb = [int(r["gb_capacity_bits"]) / 8192 for r in pts]
        for name in NAMED_COLUMNS:
            xs = [x for x, r in zip(kb, pts, strict=True) if r[name]]
            ys = [float(r[name]) / scale for r in pts if r[name]]
            if xs:
                ax.plot(xs, ys, linestyle=NAMED_STYLES[name], color="0.55", lw=1, label=name)
        xs = [x for x, r in zip(kb, pts, strict=True) if r["best_named_value"]]
        ys = [float(r["best_named_value"]) / scale for r in pts if r["best_named_value"]]
        if xs:
            ax.plot(xs, ys, "s-", color="tab:orange", ms=4, lw=1.5, label="best named")
        solved = [(x, r) for x, r in zip(kb, pts, strict=True) if r["value"]]
        ax.plot([x for x, _ in solved], [float(r["value"]) / scale for _, r in solved],
                "o-", color="tab:blue", ms=4, lw=2, label="optimum (best found if unproven)")
        open_pts = [(x, r) for x, r in solved if r["status"] != "optimal" and r["bound"]]
        if open_pts:
            lo = [float(r["bound"]) / scale for _, r in open_pts]
            hi = [float(r["value"]) / scale for _, r in open_pts]
            ax.vlines([x for x, _ in open_pts], lo, hi, color="tab:red", lw=3,
                      label="bound..incumbent (unproven)")
        if obj == "traffic":
            floor = float(pts[0]["compulsory_traffic_bits"]) / scale
            ax.axhline(floor, color="k", lw=0.8, ls="--", label="compulsory")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{net} ({obj})", fontsize=10)
        ax.set_xlabel("global buffer (KB)")
        ax.set_ylabel(f"{label} ({unit})")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    # One legend for every panel, below them, so that it hides no point.
    labels: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    fig.legend(list(labels.values()), list(labels), loc="outside lower center",
               ncols=min(len(labels), 4), fontsize=8)
    fig.suptitle("Ski slope: the optimum against buffer size")
    _save(fig, path)


def tensor_bars_plot(title: str, bars: Sequence[tuple[str, AbcMapping[str, int]]],
                     path: str | Path) -> None:
    """Stacked bars of off-chip traffic by tensor class, one bar per schedule.

    ``bars``: ``(schedule name, {tensor class: bits})`` in the order drawn.
    """
    from stems_opt.cost.traffic import TENSOR_CLASSES

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(bars) + 2.5, 3.8))
    bottom = [0.0] * len(bars)
    for cls in TENSOR_CLASSES:
        vals = [by_class.get(cls, 0) / 1e6 for _, by_class in bars]
        ax.bar([name for name, _ in bars], vals, bottom=bottom, label=cls)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("off-chip traffic (Mbit)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=30)
    _save(fig, path)


def saving_curve_plot(title: str, points: Sequence[tuple[int, float, float, bool]],
                      path: str | Path) -> None:
    """Optimal traffic and energy against state bits removed (the advisor's curve).

    ``points``: ``(state bits removed, traffic bits, energy pJ, proven)``, starting
    with the network as it is (0 bits removed). Unproven points are hollow.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = [p[0] / 8192 for p in points]
    for ax, idx, label, scale in ((axes[0], 1, "optimal traffic (Mbit)", 1e6),
                                  (axes[1], 2, "optimal energy (µJ)", 1e6)):
        ys = [p[idx] / scale for p in points]
        ax.plot(xs, ys, "-", color="tab:blue")
        for x, y, p in zip(xs, ys, points, strict=True):
            ax.plot([x], [y], "o", color="tab:blue", mfc="tab:blue" if p[3] else "white")
        ax.set_xlabel("state removed (KB)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title + "\n(accuracy must be checked by retraining)", fontsize=10)
    _save(fig, path)
