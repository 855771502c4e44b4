"""The report's PNG figures, drawn headless: matplotlib ``Figure`` objects on an Agg canvas.

Each function takes a table from :mod:`pipeline.analysis.stats`, writes one PNG and returns its path. With
nothing to draw, the figure says so in words rather than being blank. Styles: cold is black; a
warm arm's colour encodes its fraction f (viridis) and its line style its warm-up steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def _grid(nrows: int, ncols: int, height: float | None = None) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(min(max(4.2 * ncols, 6.4), 24),
                          height or min(3.2 * nrows + 0.6, 40)), dpi=100, layout="constrained")
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


def _length_axis(ax: Axes, lengths: Sequence[float], xlabel: str) -> None:
    """Lengths on a log axis (the T of a copy task spans decades), ticked at the sweep's own
    lengths; a linear one when a length is 0 (MNIST padding)."""
    values = sorted({float(v) for v in lengths})
    if values and values[0] > 0 and len(values) > 1:
        ax.set_xscale("log")
    ax.set_xticks(values)
    ax.set_xticklabels([f"{v:g}" for v in values])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)


def _dodge(lengths: pd.Series, k: int, n: int, all_lengths: Sequence[float]) -> pd.Series:
    """The ``k``-th of ``n`` arms moved aside at each length, so that none hides another: by a
    factor on a log axis, by a share of the range on a linear one (lengths include 0)."""
    step = k - (n - 1) / 2
    values = sorted({float(v) for v in all_lengths})
    if values and values[0] > 0 and len(values) > 1:
        return lengths * (1 + 0.035 * step)
    span = (values[-1] - values[0]) if len(values) > 1 else 1.0
    return lengths + 0.012 * span * step


def _arms(df: pd.DataFrame) -> list[tuple[int, float, str]]:
    """The arms in a stable order: cold first, then by steps, then by fraction."""
    arms = df[["arm_steps", "arm_fraction", "arm"]].drop_duplicates()
    return [tuple(r) for r in arms.sort_values(["arm_steps", "arm_fraction"])
            .itertuples(index=False)]


def success_vs_length(success: pd.DataFrame, path: Path, *, xlabel: str,
                      threshold: float) -> Path:
    """The memory claim in one picture: per (task, cell), the share of seeds that learned
    (error below the threshold) against length, one line per warm-up arm, Wilson 95% bars."""
    title = f"Seeds that learned (error < {threshold:g}) against length"
    if success.empty:
        return _message(Path(path), title, "no completed trials to plot")
    rows = sorted(success[["task.name", "model.cell"]].drop_duplicates().itertuples(index=False))
    ncols = min(len(rows), 3)
    fig, axes = _grid(math.ceil(len(rows) / ncols), ncols)
    steps = _warm_steps(success)
    for k, (task, cell) in enumerate(rows):
        ax = axes[k // ncols, k % ncols]
        sub = success[(success["task.name"] == task) & (success["model.cell"] == cell)]
        arms = _arms(sub)
        for n_arm, (arm_steps, frac, arm) in enumerate(arms):
            grp = sub[(sub["arm_steps"] == arm_steps) & (sub["arm_fraction"] == frac)]
            grp = grp.sort_values("length")
            err = np.clip(np.vstack([grp["share"] - grp["low"], grp["high"] - grp["share"]]),
                          0.0, None)  # rounding at 0 or n successes
            ax.errorbar(_dodge(grp["length"], n_arm, len(arms), sub["length"]), grp["share"],
                        yerr=err, label=arm, capsize=3,
                        **_style(arm_steps, frac, steps))
        _length_axis(ax, sub["length"], xlabel)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("share of seeds that learned")
        ax.set_title(f"{task} · {cell}")
    for k in range(len(rows), axes.size):
        axes[k // ncols, k % ncols].set_axis_off()
    labelled = {}  # one legend for the figure, outside the panels: the arms are shared
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(label, handle)
    fig.legend(list(labelled.values()), list(labelled), loc="outside right upper", fontsize=7,
               title="warm-up arm", title_fontsize=7)
    fig.suptitle(f"{title}; bars: Wilson 95% intervals")
    fig.savefig(path)
    return Path(path)


def error_vs_length(selected: pd.DataFrame, path: Path, *, xlabel: str, ylabel: str,
                    threshold: float | None = None) -> Path:
    """Every seed's error as a dot and the median over seeds as the line, against length; rows =
    (task, cell), columns = warm-up steps, each panel with the cold network for reference."""
    title = "Test error against length"
    data = selected.dropna(subset=["test_error"])
    if data.empty:
        return _message(Path(path), title, "no completed trials to plot")
    rows = sorted(data[["task.name", "model.cell"]].drop_duplicates().itertuples(index=False))
    steps = _warm_steps(data) or [0]
    fig, axes = _grid(len(rows), len(steps))
    positive = bool((data["test_error"] > 0).all())
    for i, (task, cell) in enumerate(rows):
        sub = data[(data["task.name"] == task) & (data["model.cell"] == cell)]
        for j, st in enumerate(steps):
            ax = axes[i, j]
            panel = sub[(sub["arm_steps"] == st) | (sub["arm_steps"] == 0)]
            arms = _arms(panel)
            for n_arm, (arm_steps, frac, arm) in enumerate(arms):
                grp = panel[(panel["arm_steps"] == arm_steps) & (panel["arm_fraction"] == frac)]
                style = _style(arm_steps, frac, steps)
                ax.scatter(_dodge(grp["length"], n_arm, len(arms), panel["length"]),
                           grp["test_error"], s=12, alpha=0.6,
                           color=style["color"], zorder=3)
                med = grp.groupby("length")["test_error"].median()
                ax.plot(med.index, med.values, color=style["color"],
                        linestyle=style["linestyle"], label=f"{arm} (median)", zorder=2)
            if threshold is not None:
                ax.axhline(threshold, color="grey", linewidth=0.8, linestyle=":",
                           label=f"threshold {threshold:g}: learned below")
            if positive and data["test_error"].max() / data["test_error"].min() > 20:
                ax.set_yscale("log")
            _length_axis(ax, panel["length"], xlabel)
            ax.set_title(f"{task} · {cell} · " + (f"{st} warm-up steps, and cold" if st
                                                  else "cold"))
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}: a dot per seed, the line through the medians")
    fig.savefig(path)
    return Path(path)


def tradeoff(trade: pd.DataFrame, path: Path, *, ylabel: str) -> Path:
    """Precision error (y) against memory horizon (x), every arm a labelled point (arms at the
    same place side by side), the Pareto front drawn as a line; one panel per task."""
    title = "Precision / memory trade-off"
    trade = trade.dropna(subset=["memory", "precision"])
    if trade.empty:
        return _message(Path(path), title, "no arm has an error at the shortest length")
    tasks = sorted(trade["task.name"].unique())
    fig, axes = _grid(1, len(tasks))
    cells = sorted(trade["model.cell"].unique())
    colors = {c: colormaps["tab10"](k % 10) for k, c in enumerate(cells)}
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        sub = trade[trade["task.name"] == task].copy()
        # the memory horizon takes the sweep's lengths only: one category per value
        values = sorted(sub["memory"].unique())
        pos = {v: float(k) for k, v in enumerate(values)}
        sub["x"] = sub["memory"].map(pos)
        for _, grp in sub.groupby("x"):
            offsets = np.linspace(-0.25, 0.25, len(grp)) if len(grp) > 1 else [0.0]
            sub.loc[grp.sort_values(["model.cell", "arm"]).index, "x"] = grp["x"].iloc[0] + \
                np.asarray(offsets)
        crowded = len(sub) > 12  # then only the front and the cold arms are named
        for _, r in sub.iterrows():
            ax.scatter(r["x"], r["precision"], color=colors[r["model.cell"]], s=40, zorder=3,
                       marker="o" if r["arm_steps"] > 0 else "s")
            if not crowded or r["pareto"] or r["arm_steps"] == 0:
                ax.annotate(f"{r['model.cell']} {r['arm']}", (r["x"], r["precision"]),
                            fontsize=6, textcoords="offset points", xytext=(4, 3), rotation=20)
        front = sub[sub["pareto"]].sort_values("x")
        ax.plot(front["x"], front["precision"], color="red", linewidth=1.2, marker="o",
                markersize=11, markerfacecolor="none", zorder=2,
                label=f"Pareto front ({len(front)} arm{'s' if len(front) != 1 else ''})")
        for cell in cells:
            ax.scatter([], [], color=colors[cell], label=cell)
        ax.scatter([], [], color="grey", marker="s", label="cold")
        ax.scatter([], [], color="grey", marker="o", label="warmed")
        _logy(ax, sub["precision"])
        ax.set_xticks(list(pos.values()))
        ax.set_xticklabels(["none" if v <= 0 else f"{v:g}" for v in values])
        ax.set_xlim(-0.6, len(values) - 0.4)
        ax.set_title(task)
        ax.set_xlabel("memory horizon: the longest length learned")
        ax.set_ylabel(f"precision: {ylabel} at the shortest length")
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\n(up and left is worse: want right and down"
                 + ("; named: the front and the cold arms)" if len(trade) > 12 else ")"),
                 fontsize=10)
    fig.savefig(path)
    return Path(path)


def overview(success: pd.DataFrame, path: Path, *, xlabel: str, threshold: float) -> Path:
    """Every point at once: the share of seeds that learned, as a heat map of arm (rows, per cell)
    against length (columns), each cell of the map labelled k/n; one panel per task."""
    title = f"Overview: seeds that learned (error < {threshold:g})"
    if success.empty:
        return _message(Path(path), title, "no completed trials to plot")
    tasks = sorted(success["task.name"].unique())
    most = max(len(success[success["task.name"] == t][["model.cell", "arm"]].drop_duplicates())
               for t in tasks)
    fig, axes = _grid(1, len(tasks), height=min(max(3.8, 0.22 * most + 1.4), 40))
    for j, task in enumerate(tasks):
        ax = axes[0, j]
        sub = success[success["task.name"] == task]
        lengths = sorted(sub["length"].unique())
        rows = [(c, a) for c in sorted(sub["model.cell"].unique())
                for a in _arms(sub[sub["model.cell"] == c])]
        grid = np.full((len(rows), len(lengths)), np.nan)
        for r, (cell, (st, frac, _)) in enumerate(rows):
            arm = sub[(sub["model.cell"] == cell) & (sub["arm_steps"] == st)
                      & (sub["arm_fraction"] == frac)]
            for _, p in arm.iterrows():
                c = lengths.index(p["length"])
                grid[r, c] = p["share"]
                ax.text(c, r, f"{p['learned']}/{p['n']}", ha="center", va="center", fontsize=7)
        image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(lengths)))
        ax.set_xticklabels([f"{v:g}" for v in lengths])
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{c} · {a[2]}" for c, a in rows], fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("cell · warm-up arm")
        ax.set_title(task)
        fig.colorbar(image, ax=ax, label="share of seeds that learned")
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
            _logy(ax, curves["valid_loss"])  # one scale for every panel: they compare
            ax.set_title(f"{task} · {cell} · length {length:g}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("validation loss (mean over seeds)")
            if len(sub):
                ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(path)
    return Path(path)


def tradeoff_over_f(trade: pd.DataFrame, path: Path, *, threshold: float) -> Path:
    """The headline figure: per task, a row of memory horizons and a row of precisions against
    the warm-up fraction f (0 = cold), a column per cell, a line per warm-up length.

    ``trade`` is :func:`pipeline.analysis.claims.tradeoff_frame`: task, cell, steps, fraction,
    horizon, precision (median error at the shortest length among the seeds that learned),
    learned and n there. The horizon axis has one even step per length run. A fraction whose
    seeds all failed at the shortest length has no precision: a cross at the panel's foot.
    """
    title = "Precision / memory trade-off over the warm-up fraction"
    if trade.empty:
        return _message(Path(path), title, "no arm to draw")
    tasks = sorted(trade["task.name"].unique())
    cells = sorted(trade["model.cell"].unique())
    fig, axes = _grid(2 * len(tasks), len(cells))
    all_steps = sorted(int(s) for s in trade["steps"].unique())
    for i, task in enumerate(tasks):
        sub = trade[trade["task.name"] == task]
        levels = sorted({0.0, *sub["horizon"].unique()})
        pos = {v: float(k) for k, v in enumerate(levels)}
        for j, cell in enumerate(cells):
            mem_ax, pre_ax = axes[2 * i, j], axes[2 * i + 1, j]
            here = sub[sub["model.cell"] == cell]
            for steps in all_steps:
                line = here[here["steps"] == steps].sort_values("fraction")
                if line.empty:
                    continue
                k = all_steps.index(steps)
                style = {"color": colormaps["viridis"](0.15 + 0.6 * k / max(1, len(all_steps) - 1)),
                         "linestyle": _LINESTYLES[k % len(_LINESTYLES)], "marker": "o"}
                mem_ax.plot(line["fraction"], line["horizon"].map(pos), label=f"{steps} steps",
                            **style)
                pre_ax.plot(line["fraction"], line["precision"], label=f"{steps} steps", **style)
                miss = line[line["precision"].isna()]
                pre_ax.scatter(miss["fraction"], [0.04] * len(miss), marker="x", zorder=3,
                               color=style["color"], transform=pre_ax.get_xaxis_transform())
            mem_ax.set_yticks(list(pos.values()))
            mem_ax.set_yticklabels(["none" if v <= 0 else f"{v:g}" for v in levels])
            mem_ax.set_ylim(-0.3, len(levels) - 0.7)
            mem_ax.set_title(f"{task} · {cell}: memory")
            pre_ax.set_title(f"{task} · {cell}: precision")
            prec = here["precision"].dropna()
            if prec.empty:
                pre_ax.set_yticks([])
                pre_ax.text(0.5, 0.5, "no seed learned at the shortest T", ha="center",
                            va="center", transform=pre_ax.transAxes)
            else:
                _logy(pre_ax, prec)
            for ax in (mem_ax, pre_ax):
                ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
                ax.set_xticklabels(["cold", ".25", ".5", ".75", "1"])
                ax.set_xlim(-0.08, 1.08)
                ax.set_xlabel("warm-up fraction f")
                ax.grid(alpha=0.3)
            if j == 0:
                mem_ax.set_ylabel("memory horizon (T)")
                pre_ax.set_ylabel("median test error\nat the shortest T (learned)")
            mem_ax.legend(fontsize=7)
    fig.suptitle(f"{title} (learned: error < {threshold:g}; memory up and precision down "
                 f"is better; x: no seed learned)")
    fig.savefig(path)
    return Path(path)
