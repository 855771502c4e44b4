"""Statistics of the report: confidence intervals, memory horizon, Pareto front, rank correlation.

Everything here is numpy/pandas only (no scipy), deterministic and checked by hand in
``tests/test_report.py``. The Student-t quantile is computed exactly, by bisection on the t
distribution's CDF written through the regularised incomplete beta function (Numerical Recipes,
3rd ed., section 6.4, continued fraction evaluated with the modified Lentz method).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

_FPMIN = 1e-300


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
            c = 1.0 + aa / c
            c = c if abs(c) > _FPMIN else _FPMIN
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_bt = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
              + a * math.log(x) + b * math.log1p(-x))
    bt = math.exp(log_bt)
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _beta_cf(a, b, x) / a
    return 1.0 - bt * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(x: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + x * x))  # P(T > |x|)
    return 1.0 - tail if x >= 0 else tail


@lru_cache(maxsize=256)
def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t distribution (e.g. ``t_ppf(0.975, 2) = 4.3027``).

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom, > 0.

    Raises:
        ValueError: if ``p`` is not in (0, 1) or ``df`` is not positive.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1) but got {p!r}")
    if not df > 0:
        raise ValueError(f"df must be > 0 but got {df!r}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):  # bisection to machine precision
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def ci95(values: Sequence[float] | np.ndarray | pd.Series) -> tuple[float, float, int]:
    """Mean and Student-t 95% confidence half-width over independent repeats (seeds).

    half-width = t_{0.975, n-1} * s / sqrt(n), with s the sample standard deviation (ddof = 1).
    NaN values are dropped first.

    Args:
        values: One number per seed.

    Returns:
        ``(mean, half_width, n)``; the mean is NaN when ``n == 0`` and the half-width is NaN
        when ``n < 2`` (no interval from a single seed).
    """
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, math.nan, n
    half = t_ppf(0.975, n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
    return mean, half, n


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float, float]:
    """A share with its Wilson score 95% interval: ``(k / n, low, high)``; NaNs when n = 0.

    low, high = (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), which stays inside
    [0, 1] and is not degenerate at 0 or n successes (unlike p +- z sqrt(p(1-p)/n)).
    """
    if n <= 0:
        return math.nan, math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)


def success_table(selected: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per scientific point: the seeds that learned (error below ``threshold``) out of those that
    completed, with the Wilson 95% interval of that share."""
    cols = [*POINT, "learned", "n", "share", "low", "high"]
    rows = []
    for key, grp in selected.groupby(POINT, dropna=False, sort=True):
        err = grp["test_error"].astype(float)
        k, n = int((err < threshold).sum()), int(err.notna().sum())
        share, low, high = wilson(k, n)
        rows.append({**dict(zip(POINT, key, strict=True)), "learned": k, "n": n, "share": share,
                     "low": low, "high": high})
    return pd.DataFrame(rows, columns=cols)


def memory_horizon(lengths: Sequence[float], errors: Sequence[float],
                   threshold: float = 0.1) -> float:
    """The longest sequence length that is learned: mean test error strictly below ``threshold``.

    Taken literally: the largest length whose error is below the threshold, even if a shorter
    length failed. A NaN error counts as not learned.

    Args:
        lengths: Sequence lengths T (or MNIST paddings), one per entry of ``errors``.
        errors: Mean test error at each length.
        threshold: Largest error still counted as learned.

    Returns:
        The memory horizon, or 0.0 when no length is learned.
    """
    lengths_a = np.asarray(lengths, dtype=float)
    errors_a = np.asarray(errors, dtype=float)
    if lengths_a.shape != errors_a.shape:
        raise ValueError(f"lengths and errors differ in size: {lengths_a.size} vs {errors_a.size}")
    learned = lengths_a[errors_a < threshold]  # NaN < threshold is False
    return float(learned.max()) if learned.size else 0.0


def majority_horizon(lengths: Sequence[float], learned: Sequence[int],
                     n: Sequence[int]) -> float:
    """The longest length that most seeds learned: ``learned > n / 2`` (3 of 5, 2 of 3).

    Robust where seeds split between learning (error ~0.001) and chance (~1), which the mean
    hides: one failed seed of five lifts the mean above any threshold. Taken literally, as
    :func:`memory_horizon`; 0.0 when no length is.
    """
    ok = 2 * np.asarray(learned, dtype=float) > np.asarray(n, dtype=float)
    return memory_horizon(lengths, np.where(ok, 0.0, 1.0), 0.5)


def permutation_p(a: Sequence[float], b: Sequence[float], *, draws: int = 20000,
                  seed: int = 0) -> float:
    """Two-sided permutation p-value of the difference of the means of ``a`` and ``b``.

    Every split of the pooled values into groups of ``len(a)`` and ``len(b)`` is enumerated
    when there are at most ``draws`` of them (exact: 252 for 5 against 5); otherwise ``draws``
    seeded random splits are used. p = share of splits whose |mean difference| is at least the
    observed one (within 1e-12), the observed split included, so p >= 1 / splits. NaN when a
    group is empty.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if not len(x) or not len(y):
        return math.nan
    pooled = np.concatenate([x, y])
    total, k = pooled.sum(), len(x)
    observed = abs(x.mean() - y.mean())
    if math.comb(len(pooled), k) <= draws:
        idx = np.array(list(itertools.combinations(range(len(pooled)), k)), dtype=int)
    else:
        rng = np.random.default_rng(seed)
        idx = np.stack([rng.permutation(len(pooled))[:k] for _ in range(draws)])
    sums = pooled[idx].sum(axis=1)
    diff = np.abs(sums / k - (total - sums) / len(y))
    return float(np.mean(diff >= observed - 1e-12))


def pareto_front(memory: Sequence[float], error: Sequence[float]) -> np.ndarray:
    """Mask of the points not dominated when maximising memory and minimising error.

    A point is dominated when another point has memory >= and error <= with at least one strict.
    Points with a NaN coordinate are never on the front (and dominate nothing).

    Args:
        memory: Memory horizon of each point (larger is better).
        error: Precision error of each point (smaller is better).

    Returns:
        Boolean array, True for the points on the front.
    """
    mem = np.asarray(memory, dtype=float)
    err = np.asarray(error, dtype=float)
    if mem.shape != err.shape:
        raise ValueError(f"memory and error differ in size: {mem.size} vs {err.size}")
    ok = ~(np.isnan(mem) | np.isnan(err))
    m, e = mem[:, None], err[:, None]  # (i, 1) against (1, j): does j dominate i?
    dominates = ((mem[None, :] >= m) & (err[None, :] <= e)
                 & ((mem[None, :] > m) | (err[None, :] < e)) & ok[None, :])
    return ok & ~dominates.any(axis=1)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, int]:
    """Spearman rank correlation: Pearson correlation of the ranks (ties get their average rank).

    Pairs with a NaN are dropped.

    Args:
        x: First variable.
        y: Second variable, paired with ``x``.

    Returns:
        ``(rho, n)``; rho is NaN when fewer than 3 pairs remain or either variable is constant.
    """
    df = pd.DataFrame({"x": np.asarray(x, dtype=float), "y": np.asarray(y, dtype=float)}).dropna()
    n = len(df)
    if n < 3:
        return math.nan, n
    rx, ry = df["x"].rank(method="average"), df["y"].rank(method="average")
    if rx.std() == 0 or ry.std() == 0:
        return math.nan, n
    return float(np.corrcoef(rx, ry)[0, 1]), n


# ------------------------------------------------------------------------ tables of the report
# These work on a trials frame prepared by ``pipeline.report.prepare``: it adds ``length``
# (T, or the padding for MNIST), ``test_error`` (test MSE, or 1 - accuracy for MNIST) and the arm
# columns, where the cold network (no warm-up) is steps 0, fraction 0.
ARM = ["task.name", "model.cell", "arm_steps", "arm_fraction", "arm"]
"""Columns of an arm: (task, cell, effective warm-up steps, effective fraction) plus its label."""
POINT = [*ARM, "length"]
"""Columns of a scientific point: an arm at one length."""
NOT_NUISANCE = {"task.name", "task.seq_len", "task.pad", "model.cell", "warmup.steps",
                "warmup.fraction", "seed", "replicas", "device", "task.data_dir"}
"""Config keys never treated as nuisance parameters (scientific keys, seeds, placement, paths)."""


def _config_keys(df: pd.DataFrame) -> list[str]:
    from pipeline.core.config import TrialConfig  # stdlib-only module

    keys = TrialConfig.keys()  # a classmethod returning a list, not a dict
    return [k for k in keys if k in df.columns and k not in NOT_NUISANCE]


def _group_column(df: pd.DataFrame) -> str | None:
    """The writer's scientific-point key column: ``group``, or ``point`` (pipeline.analysis.results)."""
    return next((c for c in ("group", "point") if c in df and df[c].notna().any()), None)


def nuisance_keys(completed: pd.DataFrame) -> list[str]:
    """Config keys (see ``TrialConfig.keys()``) that vary within some scientific point.

    The point is the writer's ``group``/``point`` column when there is one, else :data:`POINT`.
    """
    keys = _config_keys(completed)
    if completed.empty or not keys:
        return []
    by = _group_column(completed) or POINT
    varies = completed.groupby(by, dropna=False)[keys].nunique(dropna=False).max()
    return [k for k in keys if varies[k] > 1]


def hidden_scientific_keys(completed: pd.DataFrame) -> list[str]:
    """Config keys constant within each ``group``/``point`` yet varying within a :data:`POINT`.

    These are scientific parameters of the sweep that the report's axes do not show; the report
    names them, and treats their values like settings when selecting (see :func:`select_settings`).
    """
    from pipeline.core.config import TrialConfig  # stdlib-only module

    # placement, seeds, and the keys the arm columns already cover (a cold network's fraction
    # and steps are collapsed into the cold arm); the length's own key is constant per point
    placement = {"seed", "replicas", "device", "task.data_dir", "task.name", "model.cell",
                 "warmup.steps", "warmup.fraction"}
    keys = [k for k in TrialConfig.keys() if k in completed.columns and k not in placement]
    if completed.empty or not keys or _group_column(completed) is None:
        return []
    nuisance = set(nuisance_keys(completed))
    varies = completed.groupby(POINT, dropna=False)[keys].nunique(dropna=False).max()
    return [k for k in keys if varies[k] > 1 and k not in nuisance]


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def select_settings(completed: pd.DataFrame, nuisance: Sequence[str], *,
                    select: str = "best") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pick, per scientific point, the trial rows whose statistics the report shows.

    Args:
        completed: Prepared rows of completed trials.
        nuisance: Nuisance keys (see :func:`nuisance_keys`).
        select: ``best``: the nuisance setting with the lowest mean ``best_valid_loss`` over its
            seeds (ties broken by the setting's text); ``all``: every row, settings pooled.

    Returns:
        ``(selected_rows, settings)``: the chosen rows with a ``setting`` column, and one row per
        point: its chosen setting, mean validation loss, seeds and number of settings tried.
    """
    if select not in ("best", "all"):
        raise ValueError(f"select must be best or all but got {select!r}")
    df = completed.copy()
    if select == "all" or not nuisance:
        df["setting"] = "all pooled" if select == "all" else "(no nuisance key varies)"
    else:
        df["setting"] = [", ".join(f"{k}={_short(v)}" for k, v in zip(nuisance, row, strict=True))
                         for row in df[list(nuisance)].itertuples(index=False)]
    g = (df.groupby([*POINT, "setting"], dropna=False)
         .agg(mean_valid_loss=("best_valid_loss", "mean"), seeds=("test_error", "size"))
         .reset_index())
    g["settings_tried"] = g.groupby(POINT, dropna=False)["setting"].transform("size")
    g = g.sort_values([*POINT, "mean_valid_loss", "setting"], na_position="last")
    best = g.drop_duplicates(POINT, keep="first").reset_index(drop=True)
    selected = df.merge(best[[*POINT, "setting"]], on=[*POINT, "setting"])
    return selected, best


def point_table(selected: pd.DataFrame) -> pd.DataFrame:
    """Mean error and Student-t 95% CI half-width over seeds at each scientific point."""
    rows = []
    for key, grp in selected.groupby(POINT, dropna=False, sort=True):
        mean, half, n = ci95(grp["test_error"])
        rows.append({**dict(zip(POINT, key, strict=True)), "n": n, "mean": mean, "half": half})
    return pd.DataFrame(rows, columns=[*POINT, "n", "mean", "half"])


def tradeoff_table(selected: pd.DataFrame, threshold: float = 0.1) -> pd.DataFrame:
    """Memory horizon, precision and Pareto membership of every arm, from its seeds' rows.

    Seeds split between learning and chance, so both are taken over seeds, not from a mean:
    memory is :func:`majority_horizon` (the longest length most seeds learned, error below
    ``threshold``); precision is the median error at the shortest length of the arm's task
    among the seeds that learned there (``learned_short`` of ``n_short``; NaN when none did).
    The Pareto front is computed within each task.
    """
    cols = [*ARM, "lengths", "memory", "precision", "learned_short", "n_short", "pareto"]
    if selected.empty:
        return pd.DataFrame(columns=cols)
    success = success_table(selected, threshold)
    shortest = selected.groupby("task.name")["length"].min()
    by_arm = dict(iter(selected.groupby(ARM, dropna=False, sort=True)))
    rows = []
    for key, grp in success.groupby(ARM, dropna=False, sort=True):
        arm = by_arm[key]
        short = arm.loc[arm["length"] == shortest[key[0]], "test_error"].astype(float).dropna()
        good = short[short < threshold]
        rows.append({**dict(zip(ARM, key, strict=True)), "lengths": len(grp),
                     "memory": majority_horizon(grp["length"], grp["learned"], grp["n"]),
                     "precision": float(good.median()) if len(good) else math.nan,
                     "learned_short": len(good), "n_short": len(short)})
    trade = pd.DataFrame(rows, columns=cols)
    trade["pareto"] = False
    for _, grp in trade.groupby("task.name"):
        trade.loc[grp.index, "pareto"] = pareto_front(grp["memory"], grp["precision"])
    return trade


def vaa_table(completed: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rho of ``vaa_warm`` against test error per (cell, length), and per length."""
    cols = ["model.cell", "length", "n", "spearman_rho"]
    if completed.empty or "vaa_warm" not in completed:
        return pd.DataFrame(columns=cols)
    rows = []
    for (cell, length), grp in completed.groupby(["model.cell", "length"], sort=True):
        rho, n = spearman(grp["vaa_warm"], grp["test_error"])
        rows.append({"model.cell": cell, "length": length, "n": n, "spearman_rho": rho})
    for length, grp in completed.groupby("length", sort=True):
        rho, n = spearman(grp["vaa_warm"], grp["test_error"])
        rows.append({"model.cell": "all cells", "length": length, "n": n, "spearman_rho": rho})
    return pd.DataFrame(rows, columns=cols)


def mean_curves(curves: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """Mean validation loss per epoch (``train`` phase) over the selected rows of each point."""
    cols = [*POINT, "step", "valid_loss", "n"]
    keys = ["experiment", "trial_id"]
    if "replica" in curves and "replica" in selected:
        keys.append("replica")
    cur = curves[curves["phase"].astype(str) == "train"].copy()
    sel = selected[keys + POINT].drop_duplicates().copy()
    for frame in (cur, sel):
        frame["experiment"] = frame["experiment"].astype(str)
        frame["trial_id"] = frame["trial_id"].astype(str)
    merged = cur.merge(sel, on=keys)
    if merged.empty:
        return pd.DataFrame(columns=cols)
    out = (merged.groupby([*POINT, "step"], dropna=False)["valid_loss"]
           .agg(valid_loss="mean", n="count").reset_index())
    return out[cols]
