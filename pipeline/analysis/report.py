"""A sweep's report: ``report.md`` and its figures, from the ``trials`` and ``curves`` tables.

The command line is :mod:`pipeline.report`.

Reads ``<results>/<space>/trials`` and ``<results>/<space>/curves`` (Parquet, one pandas call each)
and writes ``report.md`` plus PNG figures into ``--out`` (default ``<results>/<space>/report``).
Only pandas, numpy, pyarrow and matplotlib (Agg) are used here: no torch, no ray.
The vocabulary (arm, scientific point, nuisance setting, error) is defined in :mod:`pipeline.analysis.stats`
and restated in the report itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipeline.analysis import figures as figures
from pipeline.analysis import stats
from pipeline.analysis.results import scan
from pipeline.core.config import MNIST_TASKS

REQUIRED_TRIALS = ["experiment", "trial_id", "status", "task.name", "task.seq_len",
                   "model.cell", "warmup.steps", "warmup.fraction", "seed", "test_loss",
                   "best_valid_loss"]
REQUIRED_CURVES = ["experiment", "trial_id", "phase", "step", "valid_loss"]
UNIQUE = {"trials": ["experiment", "trial_id", "replica"],
          "curves": ["experiment", "trial_id", "replica", "phase", "step"]}
"""Row identity; an interrupted compaction can leave a row twice (the last copy is kept)."""
STATUSES = ["completed", "pruned", "diverged", "error"]
SELECTION = {
    "best": "at each point, the nuisance setting with the lowest mean best validation loss over\n"
            "  its seeds is chosen (validation decides, never test); its seeds give the statistics",
    "all": "every completed trial of a point is pooled, whatever its nuisance setting",
}


# ----------------------------------------------------------------------------------------- loading
def load_table(results: str | Path, space: str, name: str,
               experiments: Sequence[str] | None = None) -> pd.DataFrame:
    """Read one results table with a single ``pd.read_parquet`` call, optionally filtered.

    Args:
        results: The results root (``--results``).
        space: The search-space name; the table lives in ``<results>/<space>/<name>``.
        name: ``trials`` or ``curves``.
        experiments: Keep only these values of the ``experiment`` column (all when None/empty).

    Returns:
        The table, each row once (by experiment, trial_id, replica[, phase, step]).

    Raises:
        ValueError: when the table is missing, unreadable, lacks a required column or is empty
            (after the experiment filter), with a one-line message saying which.
    """
    path = Path(results) / space / name
    if not path.exists():
        raise ValueError(f"no {name} table at {path}; run `python -m pipeline.sweep --space "
                         f"{space}` first or pass --results")
    try:
        df = scan(lambda: pd.read_parquet(path))  # a live sweep may compact meanwhile
    except Exception as exc:  # pyarrow raises several types; all mean "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read the {name} table at {path}: {first}") from exc
    required = REQUIRED_TRIALS if name == "trials" else REQUIRED_CURVES
    missing = [c for c in required if c not in df.columns]
    if len(df) and missing:
        raise ValueError(f"the {name} table at {path} lacks column(s) {', '.join(missing)}")
    if len(df) and experiments:
        df = df[df["experiment"].astype(str).isin(list(experiments))]
        if df.empty:
            raise ValueError(f"the {name} table at {path} has no rows for experiment(s) "
                             f"{', '.join(experiments)}")
    if df.empty:
        raise ValueError(f"the {name} table at {path} is empty")
    keys = [c for c in UNIQUE[name] if c in df.columns]
    return df.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)


def one_protocol(trials: pd.DataFrame, *, protocol: str | None = None,
                 smoke: bool = False) -> pd.DataFrame:
    """The rows of one protocol, so that a report never pools runs that held different things
    fixed (a hidden size of 8 with one of 256, a smoke run with a full one).

    Smoke runs are kept apart: without ``smoke`` they are dropped, with it only they are kept.
    Rows written before protocols were recorded form the protocol ``unrecorded``.

    Raises:
        ValueError: when the rows hold several protocols and ``protocol`` picks none, naming
            each protocol's experiments and the fixed keys that differ; or when nothing is left.
    """
    df = trials
    if "smoke" in df:
        flag = df["smoke"].astype("boolean").fillna(False).astype(bool)
        kept = df[flag] if smoke else df[~flag]
        if kept.empty:
            other = "only smoke runs: pass --smoke" if not smoke else "no smoke runs"
            raise ValueError(f"the trials table holds {other}")
        df = kept
    ids = (df["protocol"].astype("string").fillna("unrecorded") if "protocol" in df
           else pd.Series("unrecorded", index=df.index, dtype="string"))
    if protocol is not None:
        if not (ids == protocol).any():
            raise ValueError(f"no rows of protocol {protocol!r}; the table holds "
                             f"{', '.join(sorted(ids.unique()))}")
        return df[ids == protocol]
    groups = sorted(ids.unique())
    if len(groups) == 1:
        return df
    from pipeline.core.config import TrialConfig  # stdlib-only module

    keys = [k for k in TrialConfig.keys() if k in df.columns]
    per = df.groupby(ids)[keys].nunique(dropna=False)
    constant = [k for k in keys if (per[k] <= 1).all()]
    firsts = df.groupby(ids)[constant].first()
    differ = [k for k in constant if firsts[k].nunique(dropna=False) > 1]
    parts = []
    for g in groups:
        exps = ", ".join(sorted(df.loc[ids == g, "experiment"].astype(str).unique()))
        shown = " ".join(f"{k}={firsts.loc[g, k]}" for k in differ[:4])
        parts.append(f"{g} (experiments {exps}{'; ' + shown if shown else ''})")
    raise ValueError(f"the trials mix {len(groups)} protocols, which a report never pools: "
                     f"{'; '.join(parts)}; choose one with --protocol ID (or --experiment)")


def prepare(trials: pd.DataFrame) -> pd.DataFrame:
    """Add the columns ``length``, ``test_error``, ``arm_steps``, ``arm_fraction`` and ``arm``.

    ``length`` is ``task.pad`` (missing = 0) for the MNIST tasks and ``task.seq_len`` otherwise;
    ``test_error`` is ``1 - test_accuracy`` for MNIST and ``test_loss`` (MSE) otherwise. A network
    with no warm-up (steps 0 or fraction 0) is the cold arm: steps 0, fraction 0.
    """
    df = trials.copy()
    df["experiment"] = df["experiment"].astype(str)
    df["status"] = df["status"].astype(str)
    mnist = df["task.name"].astype(str).isin(MNIST_TASKS)
    pad = df["task.pad"] if "task.pad" in df else pd.Series(0.0, index=df.index)
    # rows carry the padding that ran; a missing one predates that and meant the old default, 0
    df["length"] = pad.astype(float).fillna(0.0).where(mnist, df["task.seq_len"].astype(float))
    acc = df["test_accuracy"] if "test_accuracy" in df else pd.Series(float("nan"), index=df.index)
    df["test_error"] = (1.0 - acc.astype(float)).where(mnist, df["test_loss"].astype(float))
    steps = df["warmup.steps"].astype(float).fillna(0.0)
    frac = df["warmup.fraction"].astype(float).fillna(0.0)
    cold = (steps <= 0) | (frac <= 0)
    df["arm_steps"] = steps.where(~cold, 0.0).astype(int)
    df["arm_fraction"] = frac.where(~cold, 0.0)
    df["arm"] = [arm_label(s, f) for s, f in zip(df["arm_steps"], df["arm_fraction"], strict=True)]
    if "vaa_warm" in df and "vaa_init" in df:  # nothing changed a cold network's VAA
        df["vaa_warm"] = df["vaa_warm"].astype(float).where(
            ~(cold & df["vaa_warm"].isna()), df["vaa_init"].astype(float))
    return df


def arm_label(steps: int, fraction: float) -> str:
    """``cold`` or ``f=0.5, 100 steps``."""
    return "cold" if steps <= 0 or fraction <= 0 else f"f={fraction:g}, {steps} steps"


def error_name(task: str) -> str:
    """What ``test_error`` means for a task (or ``mixed``), for axis labels and tables."""
    if task == "mixed":
        return "test error (MSE; 1 - accuracy for MNIST)"
    return "test error rate (1 - accuracy)" if task in MNIST_TASKS else "test MSE"


def length_name(task: str) -> str:
    """What ``length`` means for a task (or ``mixed``)."""
    if task == "mixed":
        return "length (T; padding P for MNIST)"
    return "padding P (task.pad)" if task in MNIST_TASKS else "sequence length T (task.seq_len)"


# ----------------------------------------------------------------------------------------- report
def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "–" if value != value else f"{value:.4g}"  # noqa: PLR0124 - NaN test
    return str(value)


def _show(df: pd.DataFrame, *, one_task: bool) -> pd.DataFrame:
    """Drop the internal arm columns (and the task when there is one) for display."""
    hidden = ["arm_steps", "arm_fraction"] + (["task.name"] if one_task else [])
    out = df.drop(columns=[c for c in hidden if c in df.columns])
    if "pareto" in out:
        out = out.assign(pareto=out["pareto"].map({True: "yes", False: ""}))
    return out


def md_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (floats with 4 significant digits, NaN as a dash)."""
    if df.empty:
        return "_(none)_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def build_report(trials: pd.DataFrame, curves: pd.DataFrame, out: str | Path, *, space: str,
                 threshold: float = 0.1, select: str = "best", source: str = "") -> Path:
    """Analyse the tables, write the figures and ``report.md`` into ``out``, return its path.

    Args:
        trials: The raw ``trials`` table.
        curves: The raw ``curves`` table.
        out: Output folder (created).
        space: Search-space name, for the title.
        threshold: Error below which a length counts as learned (memory horizon).
        select: ``best`` (per point, the nuisance setting of lowest mean validation loss) or
            ``all`` (pool every completed trial of a point).
        source: Where the tables came from, for the report's header.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = prepare(trials)
    completed = df[df["status"] == "completed"]
    nuisance = stats.nuisance_keys(completed)
    hidden = stats.hidden_scientific_keys(completed)
    if hidden:  # "best settings" range over nuisance keys only, never over a scientific one
        values = "; ".join(f"{k} = {', '.join(map(str, sorted(completed[k].dropna().unique())))}"
                           for k in hidden)
        raise ValueError(f"the sweep varies {', '.join(hidden)} between its points, which the "
                         f"report does not draw ({values}); report one value at a time with "
                         f"--where KEY=VALUE")
    selected, settings = stats.select_settings(completed, nuisance, select=select)
    points = stats.point_table(selected)
    trade = stats.tradeoff_table(selected, threshold)
    vaa = stats.vaa_table(completed)
    mean_curves = stats.mean_curves(curves, selected)
    tasks = sorted(df["task.name"].astype(str).unique())
    one = len(tasks) == 1
    task = tasks[0] if one else "mixed"
    success = stats.success_table(selected, threshold)
    files = {
        "success_vs_length": figures.success_vs_length(
            success, out / "success_vs_length.png", xlabel=length_name(task), threshold=threshold),
        "overview": figures.overview(success, out / "overview.png", xlabel=length_name(task),
                                     threshold=threshold),
        "error_vs_length": figures.error_vs_length(
            selected, out / "error_vs_length.png", xlabel=length_name(task),
            ylabel=error_name(task), threshold=threshold),
        "tradeoff": figures.tradeoff(trade, out / "tradeoff.png", ylabel=error_name(task)),
        "vaa_vs_error": figures.vaa_vs_error(completed, out / "vaa_vs_error.png",
                                             ylabel=error_name(task)),
        "learning_curves": figures.learning_curves(mean_curves, out / "learning_curves.png"),
    }
    exps = sorted(df["experiment"].unique())
    counts = df.pivot_table(index=["model.cell", "arm_steps", "arm_fraction", "arm"],
                            columns="status", values="trial_id", aggfunc="count", fill_value=0)
    counts = counts.reindex(columns=STATUSES + sorted(set(counts.columns) - set(STATUSES)),
                            fill_value=0)
    counts.loc[("all", 0, 0.0, ""), :] = counts.sum()
    bad = df[df["status"].isin(["diverged", "error"])]
    bad_cols = [c for c in ["experiment", "trial_id", "status", "model.cell", "length", "arm",
                            *nuisance, "seed", "error"] if c in bad.columns]
    thr = f"{threshold:g}"
    text = f"""# Sweep report: `{space}`

Source: `{source}`; experiment(s): {", ".join(f"`{e}`" for e in exps)}.
{len(df)} trial rows ({len(completed)} completed), {len(curves)} curve rows.
Task(s): {", ".join(tasks)}. Error: {error_name(task)}; length: {length_name(task)}.

## Definitions
- **Trial row**: one trained network (one seed; a trial training several replicas gives one row
  per replica). **Error** is the {error_name(task)} of the restored best-validation weights.
- **Arm**: (cell, warm-up steps, warm-up fraction f). A network with `warmup.steps = 0` (or f = 0)
  is **cold**: its fraction is irrelevant and it is drawn as f = 0, "cold".
- **Scientific point**: an arm at one length. **Nuisance** parameters are the config keys that vary
  within a point ({", ".join(f"`{k}`" for k in nuisance) or "none vary in these tables"}).{
    ""}
- **Which trials count**: error statistics use *completed* trials only. Pruned trials stopped early
  and have no final test error; diverged (NaN) and error trials have none either. All are counted
  below, and diverged/error trials are listed.
- **Selection** (`--select {select}`): {SELECTION[select]}.
- **95% CI**: mean over seeds ± t(0.975, n-1) · s / sqrt(n), Student-t with the sample standard
  deviation s (ddof 1) over the n seeds at the point; none when n < 2.
- **Memory horizon** of an arm: the longest length that most of its seeds learned (error below
  the threshold **{thr}**, `--threshold`; 3 of 5, 2 of 3); 0 when no length is. Seeds split
  between learning and chance, which a mean hides.
- **Precision** of an arm: the median error at the shortest length of the sweep among the seeds
  that learned there (how many: `learned_short` of `n_short`; lower is better).
- **Pareto front**: arms not dominated in (maximise memory, minimise precision error).
- **Rank correlation**: Spearman's rho, the Pearson correlation of average ranks, of the VAA after
  warm-up (`vaa_warm`; `vaa_init` for a cold network without a `vaa_warm`) against the error,
  over all completed trial rows of a group (one cell at one length, or all cells at one length).

## Trial counts
Trial rows (networks) by status, all statuses included.

{md_table(_show(counts.reset_index(), one_task=True))}
## Seeds that learned against length
The share of seeds whose error is below the threshold **{thr}**, with Wilson 95% intervals: the
memory claim in one picture.

![success vs length]({files["success_vs_length"].name})

![overview]({files["overview"].name})

{md_table(_show(success, one_task=one).rename(columns={"share": "share learned",
                                                        "low": "Wilson low", "high": "Wilson high"}))}
## Error against length
A dot per seed, the line through the medians.

![error vs length]({files["error_vs_length"].name})

{md_table(_show(points, one_task=one).rename(columns={"mean": "mean error", "half": "95% CI ±"}))}
## Precision / memory trade-off (threshold {thr})
![trade-off]({files["tradeoff"].name})

{md_table(_show(trade, one_task=one).rename(columns={"precision": "precision error"}))}
## VAA after warm-up against error
![vaa]({files["vaa_vs_error"].name})

{md_table(vaa)}
## Learning curves
Mean validation loss per epoch over the selected trials of each point (phase `train`).

![learning curves]({files["learning_curves"].name})

## Best nuisance settings
{md_table(_show(settings, one_task=one))}
## Diverged and failed trials
{md_table(bad[bad_cols])}"""
    path = out / "report.md"
    path.write_text(text)
    return path
