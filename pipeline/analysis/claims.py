"""The paper's claims checked against a finished sweep's tables (``REPRODUCTION.md``).

The command line is :mod:`pipeline.reproduction`. Reads the ``trials`` and ``curves`` tables
(pandas only: no torch, no ray), writes one report per task with
:mod:`pipeline.analysis.report` and the headline trade-off figure, and writes a Markdown file
that states, claim by claim and task by task, whether the run supports it, with its numbers.
Every number and verdict is computed here from the tables, so rerunning the command on the same
tables regenerates the file exactly.

The statistics, chosen because seeds split between learning (error ~0.001) and chance (~1):

- *learned*: a seed's test error below the threshold; a point's share of learned seeds comes with
  its Wilson 95% interval (:func:`~pipeline.analysis.stats.wilson`);
- *memory horizon* of an arm: the longest length most of its seeds learned
  (:func:`~pipeline.analysis.stats.majority_horizon`);
- *precision* of an arm: the median error at the task's shortest length among the seeds that
  learned there (k of n stated); warm and cold are compared by an exact permutation test on the
  log errors of those seeds (:func:`~pipeline.analysis.stats.permutation_p`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.analysis import figures
from pipeline.analysis.report import build_report, error_name, prepare
from pipeline.analysis.stats import permutation_p, spearman, success_table, tradeoff_table

GATED = ("gru", "lstm", "mgu")
"""Cells whose warm-up the paper's claims are about (monostable at initialisation)."""
ALPHA = 0.05
"""Significance level of the permutation tests."""
_CHANCE = 0.5
"""An error above this at the longest length is 'near chance' (the comparison of section 5)."""


@dataclass(frozen=True)
class Arm:
    """One warm-up arm of one cell on one task, summarised over its seeds."""

    task: str
    cell: str
    steps: int
    fraction: float
    label: str
    horizon: float
    precision: float  # median error at the shortest length among the seeds that learned there
    learned_short: int
    n_short: int
    log_short: tuple[float, ...]  # log10 errors of those seeds, for the permutation tests


def _p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2g}" if value >= 0.001 else "< 0.001"


def _g(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def _h(value: float) -> str:
    return "none" if value <= 0 else f"{value:g}"


def _join(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


def summarise(done: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, dict[tuple, Arm]]:
    """The success table (per point: learned of n, Wilson interval) and every arm's summary
    (:func:`~pipeline.analysis.stats.tradeoff_table`, plus the log errors its tests need)."""
    success = success_table(done, threshold)
    shortest = done.groupby("task.name")["length"].min()
    short = done[done["length"] == done["task.name"].map(shortest)]
    logs = (short[short["test_error"] < threshold]
            .groupby(["task.name", "model.cell", "arm_steps", "arm_fraction"])["test_error"]
            .apply(lambda e: tuple(float(v) for v in np.log10(e.astype(float).clip(lower=1e-12)))))
    arms: dict[tuple, Arm] = {}
    for r in tradeoff_table(done, threshold).itertuples(index=False):
        task, cell, steps, fraction, label = r[:5]
        key = (task, cell, steps, fraction)
        arms[key] = Arm(task, cell, int(steps), float(fraction), str(label), float(r.memory),
                        float(r.precision), int(r.learned_short), int(r.n_short),
                        logs.get(key, ()))
    return success, arms


def _full(arms: Mapping[tuple, Arm], task: str, cell: str) -> Arm | None:
    """The fully warmed arm (f = 1) with the longest warm-up, else None."""
    full = [a for a in arms.values() if a.task == task and a.cell == cell and a.fraction == 1]
    return max(full, key=lambda a: a.steps) if full else None


def _cold(arms: Mapping[tuple, Arm], task: str, cell: str) -> Arm | None:
    return arms.get((task, cell, 0, 0.0))


def _cost(warm: Arm, cold: Arm) -> float:
    """Permutation p-value of warm against cold precision (NaN unless both have 2 seeds)."""
    if min(len(warm.log_short), len(cold.log_short)) < 2:
        return math.nan
    return permutation_p(warm.log_short, cold.log_short)


def _ks(success: pd.DataFrame, task: str, cell: str, steps: int, fraction: float,
        length: float) -> str:
    row = success[(success["task.name"] == task) & (success["model.cell"] == cell)
                  & (success["arm_steps"] == steps) & (success["arm_fraction"] == fraction)
                  & (success["length"] == length)]
    if row.empty:
        return "n/a"
    r = row.iloc[0]
    return f"{int(r['learned'])}/{int(r['n'])} [{r['low']:.2f}, {r['high']:.2f}]"


def claim_monostable(done: pd.DataFrame) -> tuple[str, str, str]:
    n = done["vaa.samples"].astype(int)
    floor = (done["vaa_init"].astype(float) - 1.0 / n).abs() < 1e-9
    lines, gated_ok, multi = [], [], []
    for cell in sorted(done["model.cell"].unique()):
        m = done["model.cell"] == cell
        v = done.loc[m, "vaa_init"].astype(float)
        at = int(floor[m].sum())
        lines.append(f"- {cell}: VAA at initialisation = 1/n in {at} of {int(m.sum())} runs; "
                     f"mean {v.mean():.3f}, median {v.median():.3f}, range "
                     f"{v.min():.3f}-{v.max():.3f} (1/n = {1 / n[m].iloc[0]:.4f})")
        if cell in GATED:
            gated_ok.append(at == int(m.sum()))
        elif at < int(m.sum()):
            multi.append(f"{cell} (mean VAA {v.mean():.2f})")
    verdict = ("supported" if gated_ok and all(gated_ok) else "not supported")
    if multi:
        verdict += f"; the bistable cells are partly multistable already: {', '.join(multi)}"
    return "1. Gated cells are monostable at initialisation (VAA = 1/n).", verdict, "\n".join(lines)


def claim_vaa(done: pd.DataFrame, curves: pd.DataFrame,
              threshold: float) -> tuple[str, str, str]:
    tr = curves[curves["phase"].astype(str) == "train"]
    keys = ["trial_id", "replica"]
    peak = tr.groupby(keys)["vaa"].max().rename("vaa_peak").reset_index()
    d = done.assign(trial_id=done["trial_id"].astype(str)).merge(
        peak.assign(trial_id=peak["trial_id"].astype(str)), on=keys, how="left")
    d = d[d["model.cell"].isin(GATED)]
    lines, verdicts = [], []
    for task, g in d.groupby("task.name", sort=True):
        learned = g["test_error"] < threshold
        rho, m = spearman(g["vaa_peak"], g["test_error"])
        lo, hi = g.loc[learned, "vaa_peak"], g.loc[~learned, "vaa_peak"]
        above = float((lo > 1.0 / g.loc[learned, "vaa.samples"]).mean()) if len(lo) else math.nan
        lines.append(f"- {task} ({', '.join(sorted(g['model.cell'].unique()))}): "
                     f"{int(learned.sum())} runs learned, median peak VAA during training "
                     f"{_g(float(lo.median()) if len(lo) else math.nan)}, above 1/n in "
                     f"{'n/a' if math.isnan(above) else f'{above:.0%}'} of them; "
                     f"{int((~learned).sum())} did not, median peak VAA "
                     f"{_g(float(hi.median()) if len(hi) else math.nan)}; Spearman rho of peak "
                     f"VAA with test error over {m} runs: {_g(rho)}")
        ok = len(lo) > 0 and above >= 0.9 and rho < 0
        failed = float((hi > 1.0 / g.loc[~learned, "vaa.samples"]).mean()) if len(hi) else 0.0
        note = (f" (multistability necessary, not sufficient: {failed:.0%} of the runs that did "
                f"not learn reached it too)" if ok and failed > 0.5 else "")
        verdicts.append(f"{task}: {'supported' if ok else 'not supported'}{note}")
    return ("2. Learning long time dependencies happens once reachable stable states grow "
            "(gated cells).", "; ".join(verdicts), "\n".join(lines))


def _grid(success: pd.DataFrame, arms: Mapping[tuple, Arm], task: str) -> str:
    """Markdown table: seeds learned per length for every arm, with horizon and precision."""
    sub = success[success["task.name"] == task]
    lengths = sorted(sub["length"].unique())
    head = ("| cell | arm | " + " | ".join(f"T={t:g}" for t in lengths)
            + " | horizon | precision (learned) |\n|" + "---|" * (len(lengths) + 4))
    rows = []
    for key, grp in sub.groupby(["model.cell", "arm_steps", "arm_fraction"], sort=True):
        a = arms[(task, *key)]
        counts = {float(r["length"]): f"{int(r['learned'])}/{int(r['n'])}"
                  for _, r in grp.iterrows()}
        rows.append(f"| {a.cell} | {a.label} | " + " | ".join(counts.get(t, "–") for t in lengths)
                    + f" | {_h(a.horizon)} | {_g(a.precision)} ({a.learned_short}/{a.n_short}) |")
    return head + "\n" + "\n".join(rows)


def claim_tradeoff(done: pd.DataFrame, success: pd.DataFrame, arms: Mapping[tuple, Arm],
                   threshold: float) -> tuple[str, str, str]:
    parts, verdicts = [], []
    for task in sorted(done["task.name"].unique()):
        lengths = sorted(done.loc[done["task.name"] == task, "length"].unique())
        short, long_ = lengths[0], lengths[-1]
        gained, lost, cost, better, lines = [], [], [], [], []
        for cell in sorted(done.loc[done["task.name"] == task, "model.cell"].unique()):
            cold, full = _cold(arms, task, cell), _full(arms, task, cell)
            if cold is None or full is None:
                continue
            p = _cost(full, cold)
            best = max((a for a in arms.values() if a.task == task and a.cell == cell),
                       key=lambda a: (a.horizon, -a.precision if not math.isnan(a.precision)
                                      else -math.inf))
            longer = [t for t in lengths if t > cold.horizon]
            at = (cold.horizon if full.horizon < cold.horizon else
                  longer[0] if longer else long_)
            if full.horizon > cold.horizon:
                gained.append(cell)
            elif full.horizon < cold.horizon:
                lost.append(cell)
            worse = not math.isnan(p) and p < ALPHA and full.precision > cold.precision
            if worse:
                cost.append(cell)
            elif not math.isnan(p) and p < ALPHA:
                better.append(cell)
            fewer = ""
            if (full.learned_short, full.n_short) != (cold.learned_short, cold.n_short):
                fewer = (f"; at T={short:g} seeds learned cold "
                         f"{_ks(success, task, cell, 0, 0.0, short)} vs "
                         f"{_ks(success, task, cell, full.steps, full.fraction, short)}")
            lines.append(
                f"- {cell}: memory horizon cold {_h(cold.horizon)} -> {full.label} "
                f"{_h(full.horizon)} (best arm: {best.label}, {_h(best.horizon)}); at T={at:g} "
                f"seeds learned cold {_ks(success, task, cell, 0, 0.0, at)} vs "
                f"{_ks(success, task, cell, full.steps, full.fraction, at)} (Wilson 95%); "
                f"precision at T={short:g} cold {_g(cold.precision)} "
                f"({cold.learned_short}/{cold.n_short} learned) vs {_g(full.precision)} "
                f"({full.learned_short}/{full.n_short}), permutation p = {_p(p)}"
                + (" (warm-up cost precision)" if worse else "") + fewer)
        gated = [c for c in gained if c in GATED]
        mem = (f"memory gain for {_join(gated)}" if gated else "no memory gain for gated cells")
        other = [c for c in gained if c not in GATED]
        if other:
            mem += f" (and {_join(other)})"
        if lost:
            mem += f", a shorter horizon when warmed for {_join(lost)}"
        verdicts.append(f"{task}: {mem}; "
                        + (f"precision cost for {_join(cost)}" if cost else
                           "no significant precision cost")
                        + (f" (precision better when warmed for {_join(better)})"
                           if better else ""))
        parts.append(f"**{task}** (learned: {error_name(task)} < {threshold:g}; seeds learned "
                     f"per length, horizon = longest T most seeds learned, precision = median "
                     f"error at T={short:g} among the seeds that learned there):\n\n"
                     + _grid(success, arms, task) + "\n\n" + "\n".join(lines))
    return ("3. Warming up makes GRU/LSTM learn long-memory tasks at longer T, but can impede "
            "precision.", "; ".join(verdicts), "\n\n".join(parts))


def claim_partial(done: pd.DataFrame, arms: Mapping[tuple, Arm]) -> tuple[str, str, str]:
    lines, verdicts = [], []
    for task in sorted(done["task.name"].unique()):
        tested = []
        for cell in sorted(done.loc[done["task.name"] == task, "model.cell"].unique()):
            cold, full = _cold(arms, task, cell), _full(arms, task, cell)
            if cold is None or full is None:
                continue
            p_full = _cost(full, cold)
            cost = not math.isnan(p_full) and p_full < ALPHA and full.precision > cold.precision
            gain = full.horizon > cold.horizon
            if not cost:
                continue
            partial = sorted((a for a in arms.values() if a.task == task and a.cell == cell
                              and a.steps == full.steps and 0 < a.fraction < 1),
                             key=lambda a: a.fraction)
            kept = [a for a in partial if a.horizon >= full.horizon]
            recovered = [a for a in partial
                         if a.precision < full.precision and _cost(full, a) < ALPHA]
            both = [a.label for a in kept if a in recovered]
            best = min((a for a in partial if not math.isnan(a.precision)),
                       key=lambda a: a.precision, default=None)
            state = (f"memory kept and precision recovered by {_join(both)}" if both and gain
                     else f"precision recovered by {_join([a.label for a in recovered])}"
                     if recovered else "precision not significantly recovered" + (
                         f" (closest: {best.label} {_g(best.precision)} vs full "
                         f"{_g(full.precision)}, cold {_g(cold.precision)}, p = "
                         f"{_p(_cost(full, best))})" if best else ""))
            if not gain:
                state += " (full warm-up brought no memory gain here to keep)"
            tested.append(f"{cell}: {state}")
            for a in partial:
                lines.append(f"- {task}, {cell}: {a.label} horizon {_h(a.horizon)} (full "
                             f"{_h(full.horizon)}, cold {_h(cold.horizon)}); precision "
                             f"{_g(a.precision)} ({a.learned_short}/{a.n_short}) vs full "
                             f"{_g(full.precision)}, cold {_g(cold.precision)}; p vs full = "
                             f"{_p(_cost(full, a))}")
        verdicts.append(f"{task}: " + ("; ".join(tested) if tested else
                                       "not testable (full warm-up cost no precision)"))
    if not lines:
        lines.append("- no cell on any task had a significant precision cost from full warm-up, "
                     "so there is nothing for a partial warm-up to recover")
    return ("4. A partly warmed network keeps the memory gain and recovers precision.",
            "; ".join(verdicts), "\n".join(lines))


def comparison(done: pd.DataFrame) -> tuple[str, str, str] | None:
    """The independent bistable-cell reproduction: copy task, cold networks, longest T."""
    copy = done[(done["task.name"] == "copy") & (done["arm_steps"] == 0)]
    if copy.empty or not {"gru", "lstm"} <= set(copy["model.cell"]):
        return None
    t = copy["length"].max()
    med = copy[copy["length"] == t].groupby("model.cell")["test_error"].median()
    near = [c for c in ("gru", "lstm") if med.get(c, math.nan) > _CHANCE]
    bist = [c for c in ("brc", "nbrc") if c in med]
    below = [c for c in bist if med[c] < _CHANCE]
    agree = len(near) == 2 and bist and len(below) == len(bist)
    evidence = "\n".join(f"- {c}: median test MSE {med[c]:.3g}" for c in med.index)
    return (f"5. The independent bistable-cell reproduction (copy, T = 100 and 300: GRU/LSTM near "
            f"chance, MSE ~0.7-1.0; BRC/nBRC 0.13-0.4), against the cold networks here at "
            f"T={t:g}.", "agrees qualitatively" if agree else "does not agree", evidence)


def claims(done: pd.DataFrame, curves: pd.DataFrame,
           threshold: float) -> list[tuple[str, str, str]]:
    """(claim, verdict, evidence in Markdown) for each claim, from a prepared trials table."""
    done = done[done["status"] == "completed"]
    success, arms = summarise(done, threshold)
    out = [claim_monostable(done), claim_vaa(done, curves, threshold),
           claim_tradeoff(done, success, arms, threshold), claim_partial(done, arms)]
    extra = comparison(done)
    return out + ([extra] if extra else [])


def tradeoff_frame(done: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per arm: task, cell, steps, fraction, horizon and precision (the headline figure's data);
    the cold arm appears once per warm-up length, at f = 0."""
    _, arms = summarise(done[done["status"] == "completed"], threshold)
    rows: list[dict[str, Any]] = []
    for a in arms.values():
        warm = sorted({b.steps for b in arms.values() if b.task == a.task and b.steps > 0})
        for steps in (warm if a.steps == 0 else [a.steps]):
            rows.append({"task.name": a.task, "model.cell": a.cell, "steps": steps,
                         "fraction": a.fraction, "horizon": a.horizon, "precision": a.precision,
                         "learned": a.learned_short, "n": a.n_short})
    return pd.DataFrame(rows)


def write_figures(trials: pd.DataFrame, done: pd.DataFrame, curves: pd.DataFrame, figs: Path,
                  threshold: float, space: str, source: str) -> dict[str, Path]:
    """One report per task (``figs/<task>/report.md`` and its PNGs) and the headline figure."""
    figs.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task in sorted(trials["task.name"].astype(str).unique()):
        rows = trials[trials["task.name"].astype(str) == task]
        ids = set(rows["trial_id"].astype(str))
        paths[task] = build_report(rows, curves[curves["trial_id"].astype(str).isin(ids)],
                                   figs / task, space=space, threshold=threshold, source=source)
    paths["headline"] = figures.tradeoff_over_f(tradeoff_frame(done, threshold),
                                                figs / "tradeoff_over_f.png", threshold=threshold)
    return paths



def _concurrency(trials: pd.DataFrame) -> int:
    """The most trials that ran at once, from the rows' start and end times."""
    t = trials.drop_duplicates("trial_id")[["started_at", "finished_at"]].dropna()
    events = sorted([(s, 1) for s in t["started_at"]] + [(f, -1) for f in t["finished_at"]])
    run = peak = 0
    for _, step in events:  # an end sorts before a start at the same instant
        run += step
        peak = max(peak, run)
    return peak


def _protocol(meta: Mapping[str, Any], trials: pd.DataFrame) -> str:
    definition = meta.get("definition") or {}
    fixed = dict(definition.get("fixed") or {})
    for key in ("train.lr", "warmup.lr", "vaa.samples"):
        if key in trials and trials[key].nunique() == 1:
            fixed.setdefault(key, trials[key].iloc[0])
    return ", ".join(f"{k}={v}" for k, v in fixed.items())


def _limits(done: pd.DataFrame, threshold: float) -> list[str]:
    """What the study does not show, from its protocol and its numbers."""
    first = done.iloc[0]
    seeds = done["seed"].nunique()
    lr = sorted(done["train.lr"].unique())
    out = [f"- It is CPU scale: hidden {int(first['model.hidden_size'])}, "
           f"{int(first['model.num_layers'])} layers, {int(first['task.train_samples']):,} "
           f"training samples, {int(first['train.epochs'])} epochs, T <= "
           f"{done['length'].max():g}, {seeds} seeds per point; the paper's protocol is hidden "
           f"256, 60,000 samples, 50 epochs, T up to 600. A horizon is measured only on the "
           f"lengths run ({', '.join(f'{t:g}' for t in sorted(done['length'].unique()))}).",
           f"- The exact VAA uses {int(first['vaa.steps']):,} stabilisation steps and "
           f"{int(first['vaa.estimates'])} estimates of {int(first['vaa.samples'])} states per "
           f"epoch (the reference: 10,000 steps, 10 estimates).",
           "- The learning rate is " + (f"fixed ({lr[0]:g}) for every point, not tuned per point"
                                        if len(lr) == 1 else f"one of {lr}") + "."]
    for task, g in done.groupby("task.name", sort=True):
        never = [c for c, h in g.groupby("model.cell")
                 if not (h["test_error"] < threshold).any()]
        if never:
            out.append(f"- On {task}, {_join(never)} never learned (no seed below "
                       f"{threshold:g} at any length or arm): the study says nothing about "
                       f"warm-up for {'it' if len(never) == 1 else 'them'} there.")
    with_mnist = done["task.name"].astype(str).str.contains("mnist").any()
    if not with_mnist:
        out.append("- No MNIST task is run.")
    return out


def write(trials: pd.DataFrame, curves: pd.DataFrame, meta: Mapping[str, Any], out: Path,
          figs: Path, threshold: float, *, command: str | None, regenerate: str,
          source: str) -> Path:
    """Write ``out`` (and the figures under ``figs``) from raw ``trials`` and ``curves``."""
    space = str(meta.get("space") or trials["space"].iloc[0])
    done_all = prepare(trials)
    done = done_all[done_all["status"] == "completed"]
    if done.empty:
        raise ValueError("the trials table has no completed run")
    paths = write_figures(trials, done, curves, figs, threshold, space, source)
    started = (pd.Timestamp(meta["created_at"]) if "created_at" in meta
               else done_all["started_at"].min())
    wall = (done_all["finished_at"].max() - started).total_seconds() / 60
    seeds = sorted(int(s) for s in done_all["seed"].unique())
    counts = {str(k): int(v) for k, v in done_all["status"].value_counts().sort_index().items()}
    cpu = ", ".join(sorted(done_all["cpu_model"].dropna().astype(str).unique())) or "?"
    gpus = sorted(done_all["gpu_name"].dropna().astype(str).unique()) if "gpu_name" in \
        done_all else []
    threads = sorted(int(t) for t in done_all["threads"].dropna().unique())
    cores = f", driver with {meta['driver_cpus']} cores" if meta.get("driver_cpus") else ""
    rel = Path(os.path.relpath(figs.resolve(), out.parent.resolve()))
    tasks = sorted(done["task.name"].astype(str).unique())
    warm = done[done["arm_steps"] > 0]
    lines = [
        "# Reproduction: the warm-up claims at CPU scale", "",
        "Generated by `python -m pipeline.reproduction` from the Parquet tables of one real "
        "sweep; every number below is computed from them.", "",
        "## The run", "",
        f"- sweep command: `{command or meta.get('command', '?')}`",
        f"- tables: `{source}` ({len(done_all)} trial rows, {len(curves)} curve rows)",
        f"- regenerate this file: `{regenerate}`",
        f"- machine: {cpu}{cores} ({'GPU ' + ', '.join(gpus) if gpus else 'no GPU used'}); "
        f"{'/'.join(map(str, threads))} torch thread(s) per trial, at most "
        f"{_concurrency(done_all)} trials at once",
        f"- wall time: {wall:.1f} min (from the experiment's start to the last trial's end)",
        f"- seeds: {seeds} (each trial trains its seeds in lockstep; one row per seed)",
        f"- runs by status: {counts}",
        f"- tasks: {', '.join(tasks)}; cells: {', '.join(sorted(done['model.cell'].unique()))}; "
        f"arms: cold and f in {{{', '.join(f'{f:g}' for f in sorted(warm['arm_fraction'].unique()))}}}"
        f" at {', '.join(str(s) for s in sorted(warm['arm_steps'].unique()))} warm-up steps",
        f"- a seed *learned* when its test error is below {threshold:g} (chance level ~1.0)", "",
        f"Protocol (fixed in `search_spaces/{space}.py`, id `{meta.get('protocol', '?')}`): "
        f"{_protocol(meta, done)}.", "",
        "## The trade-off over the warm-up fraction", "",
        "Memory horizon (the longest T most seeds learned) and precision (median error at the "
        "shortest T among the seeds that learned; a cross where none did) against f, f = 0 being the "
        "cold network; one line per warm-up length.", "",
        f"![trade-off over f]({rel.as_posix()}/{paths['headline'].name})", "",
        "## The claims", ""]
    for claim, verdict, evidence in claims(done, curves, threshold):
        lines += [f"### {claim}", "", f"**Verdict: {verdict}.**", "", evidence, ""]
    lines += ["## What this study does not show", "", *_limits(done, threshold), "",
              "## Figures and full reports", "",
              *[f"- {t}: [{rel.as_posix()}/{t}/report.md]({rel.as_posix()}/{t}/report.md) "
                f"(success with Wilson intervals, errors per seed, learning curves)"
                for t in tasks], "",
              *[f"![{t}: seeds learned against T]({rel.as_posix()}/{t}/success_vs_length.png)\n"
                for t in tasks]]
    out.write_text("\n".join(lines))
    return out

