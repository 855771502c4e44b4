"""The report's PNG figures, drawn headless: matplotlib ``Figure`` objects on an Agg canvas.

Each function takes a table from :mod:`pipeline.analysis.stats`, writes one PNG and returns its path. With
nothing to draw, the figure says so in words rather than being blank. Styles: cold is black; a
warm arm's colour encodes its fraction f (viridis) and its line style its warm-up steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_LINESTYLES = ["-", "--", ":", "-."]
_MARKERS = ["v", "s", "D", "^", "P", "*", "o"]


def _grid(nrows: int, ncols: int) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(min(max(4.2 * ncols, 6.4), 24), min(3.2 * nrows + 0.6, 40)), dpi=100,
                 layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg, whatever backend pyplot may have chosen
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def _message(path: Path, title: str, text: str) -> Path:
    fig, axes = _grid(1, 1)
    ax = axes[0, 0]
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=12)
    ax.set_axis_off()
    fig.savefig(path)
    return path


def _style(steps: int, fraction: float, all_steps: list[int]) -> dict[str, object]:
    if steps <= 0 or fraction <= 0:
        return {"color": "black", "linestyle": "-", "marker": "o"}
    idx = all_steps.index(steps) if steps in all_steps else 0
    return {"color": colormaps["viridis"](0.1 + 0.75 * min(fraction, 1.0)),
            "linestyle": _LINESTYLES[idx % len(_LINESTYLES)], "marker": "o"}


def _logy(ax: Axes, values: pd.Series) -> None:
    vals = values.dropna()
    if len(vals) and (vals > 0).all() and vals.max() / vals.min() > 20:
        ax.set_yscale("log")


def _warm_steps(df: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in df["arm_steps"].unique() if s > 0)


def error_vs_length(points: pd.DataFrame, path: Path, *, xlabel: str, ylabel: str,
                    threshold: float | None = None) -> Path:
    """Mean error against length with 95% CI bars; rows = (task, cell), columns = warm-up steps.

    Every panel shows the cold network and the warm arms with that many warm-up steps, one line
    per fraction.
    """
    title = "Test error against length"
    if points.empty:
        return _message(Path(path), title, "no completed trials to plot")
    rows = sorted(points[["task.name", "model.cell"]].drop_duplicates().itertuples(index=False))
    steps = _warm_steps(points) or [0]
    fig, axes = _grid(len(rows), len(steps))
    for i, (task, cell) in enumerate(rows):
        sub = points[(points["task.name"] == task) & (points["model.cell"] == cell)]
        for j, st in enumerate(steps):
            ax = axes[i, j]
            panel = sub[(sub["arm_steps"] == st) | (sub["arm_steps"] == 0)]
            for (arm_steps, frac, arm), grp in panel.groupby(["arm_steps", "arm_fraction", "arm"]):
                grp = grp.sort_values("length")
                ax.errorbar(grp["length"], grp["mean"], yerr=grp["half"].fillna(0.0), label=arm,
                            capsize=3, **_style(arm_steps, frac, steps))
            if threshold is not None:
                ax.axhline(threshold, color="grey", linewidth=0.8, linestyle=":")
            _logy(ax, panel["mean"])
            ax.set_title(f"{task} · {cell} · " + (f"{st} warm-up steps" if st else "cold only"))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}: mean over seeds, Student-t 95% CI")
    fig.savefig(path)
    return Path(path)


def tradeoff(trade: pd.DataFrame, path: Path, *, ylabel: str) -> Path:
    """Precision error (y) against memory horizon (x) per arm; the Pareto front ringed, joined."""
    title = "Precision / memory trade-off"
    trade = trade.dropna(subset=["memory", "precision"])
    if trade.empty:
        return _message(Path(path), title, "no arm has an error at the shortest length")
    tasks = sorted(trade["task.name"].unique())
    fig, axes = _grid(1, len(tasks))
    cells = sorted(trade["model.cell"].unique())
    colors = {c: colormaps["tab10"](k % 10) for k, c in enumerate(cells)}
    fracs = sorted(f for f in trade["arm_fraction"].unique() if f > 0)
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        sub = trade[trade["task.name"] == task]
        for _, r in sub.iterrows():
            frac = r["arm_fraction"]
            marker = "X" if frac <= 0 else _MARKERS[fracs.index(frac) % len(_MARKERS)]
            ax.scatter(r["memory"], r["precision"], color=colors[r["model.cell"]], marker=marker,
                       s=50, zorder=3)
        front = sub[sub["pareto"]].sort_values("memory")
        ax.plot(front["memory"], front["precision"], color="red", linewidth=1, zorder=2,
                drawstyle="steps-pre", label="Pareto front")
        ax.scatter(front["memory"], front["precision"], s=160, facecolors="none",
                   edgecolors="red", zorder=4)
        for _, r in front.iterrows():
            ax.annotate(f"{r['model.cell']} {r['arm']}", (r["memory"], r["precision"]),
                        fontsize=7, textcoords="offset points", xytext=(5, 5))
        for cell in cells:
            ax.scatter([], [], color=colors[cell], label=cell)
        for frac in [0.0, *fracs]:
            ax.scatter([], [], color="grey", label="cold" if frac <= 0 else f"f={frac:g}",
                       marker="X" if frac <= 0 else _MARKERS[fracs.index(frac) % len(_MARKERS)])
        _logy(ax, sub["precision"])
        ax.set_title(task)
        ax.set_xlabel("memory horizon (longest length learned)")
        ax.set_ylabel(f"precision: {ylabel} at shortest length")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)


def vaa_vs_error(completed: pd.DataFrame, path: Path, *, ylabel: str) -> Path:
    """Error against VAA after warm-up, one panel per length, one colour per cell."""
    title = "VAA after warm-up against test error"
    if "vaa_warm" not in completed:
        return _message(Path(path), title, "the trials table has no vaa_warm column")
    data = completed.dropna(subset=["vaa_warm", "test_error"])
    if data.empty:
        return _message(Path(path), title, "no completed trial has both vaa_warm and an error")
    lengths = sorted(data["length"].unique())
    ncols = min(len(lengths), 4)
    fig, axes = _grid(math.ceil(len(lengths) / ncols), ncols)
    cells = sorted(data["model.cell"].unique())
    colors = {c: colormaps["tab10"](k % 10) for k, c in enumerate(cells)}
    for k, length in enumerate(lengths):
        ax = axes[k // ncols, k % ncols]
        sub = data[data["length"] == length]
        for cell in cells:
            grp = sub[sub["model.cell"] == cell]
            cold = grp["arm_steps"] == 0
            ax.scatter(grp.loc[~cold, "vaa_warm"], grp.loc[~cold, "test_error"], color=colors[cell],
                       s=18, label=f"{cell} warmed")
            ax.scatter(grp.loc[cold, "vaa_warm"], grp.loc[cold, "test_error"], s=18,
                       facecolors="none", edgecolors=colors[cell], label=f"{cell} cold")
        if (sub["vaa_warm"] > 0).all() and sub["vaa_warm"].max() / sub["vaa_warm"].min() > 20:
            ax.set_xscale("log")
        _logy(ax, sub["test_error"])
        ax.set_title(f"length {length:g}")
        ax.set_xlabel("VAA after warm-up (vaa_warm)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    for k in range(len(lengths), axes.size):
        axes[k // ncols, k % ncols].set_axis_off()
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)


def learning_curves(curves: pd.DataFrame, path: Path) -> Path:
    """Mean validation loss against epoch; rows = (task, cell), columns = lengths, lines = arms."""
    title = "Learning curves"
    if curves.empty:
        return _message(Path(path), title, "no train-phase curves for the selected trials")
    rows = sorted(curves[["task.name", "model.cell"]].drop_duplicates().itertuples(index=False))
    lengths = sorted(curves["length"].unique())
    steps = _warm_steps(curves)
    fig, axes = _grid(len(rows), len(lengths))
    for i, (task, cell) in enumerate(rows):
        for j, length in enumerate(lengths):
            ax = axes[i, j]
            sub = curves[(curves["task.name"] == task) & (curves["model.cell"] == cell)
                         & (curves["length"] == length)]
            for (arm_steps, frac, arm), grp in sub.groupby(["arm_steps", "arm_fraction", "arm"]):
                style = _style(arm_steps, frac, steps) | {"marker": None}
                ax.plot(grp["step"], grp["valid_loss"], label=arm, **style)
            _logy(ax, sub["valid_loss"])
            ax.set_title(f"{task} · {cell} · length {length:g}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("validation loss (mean over seeds)")
            if len(sub):
                ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)
