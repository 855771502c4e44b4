"""Several seeds of one trial in lockstep: each replica keeps its own weights, optimiser, data
and draws, exactly as a one-seed trial with its seed, while their steps run side by side (their
scans grouped where that pays on the device). A divergence or failure ends one replica alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from pipeline.core.config import TrialConfig
from pipeline.core.model import ParallelNet, build_model
from pipeline.core.multistability import draw_lengths, layer_vaa_star, measure_vaa, sample_states
from pipeline.core.outcomes import CURVE_FIELDS, RECORD_FIELDS, Diverged, StopTrial
from pipeline.core.seeding import seed_trial
from pipeline.core.tasks import build_task, on_device, pooled
from pipeline.core.train import Trainer, epoch_group, evaluate
from pipeline.core.warmup import warmup_loop_group

Report = Callable[[dict[str, Any]], None]


def _vaa_star_now(net: ParallelNet, x: torch.Tensor, cfg: TrialConfig, gen: torch.Generator) -> float:
    """Mean over layers of VAA* of the warm parts after ``max_stabilization`` steps (no grad)."""
    with torch.no_grad():
        states = sample_states(net, x, draw_lengths(x.size(1), x.size(0), gen))
        return float(layer_vaa_star(net, states, cfg.warmup.max_stabilization, gen,
                                    cfg.warmup.eps).mean())


def _finite_or_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


class Replica:
    """One seed of a trial, advanced phase by phase so that several seeds run in lockstep.

    Its record holds every flat config key (with this replica's seed), ``RECORD_FIELDS`` and
    ``curves``. A divergence or runtime failure ends only this replica (``alive`` turns False).
    """

    def __init__(self, cfg: TrialConfig, device: torch.device, t_start: float,
                 mode: Mapping[str, Any]) -> None:
        self.cfg, self.device, self.t_start = cfg, device, t_start
        self.gen, self.measure_gen = seed_trial(cfg.seed)
        self.task = build_task(cfg, self.gen)  # may raise: missing data is bad input
        # weights from the global RNG just seeded, before another replica reseeds it
        self.net = build_model(cfg.model, self.task.input_size, self.task.output_size,
                               cfg.warm_width)
        self.rec: dict[str, Any] = {**cfg.to_dict(), **dict.fromkeys(RECORD_FIELDS)}
        self.rec.update(mode, device=str(device), epochs_run=0, warmup_steps_run=0, warmup_s=0.0,
                        train_s=0.0, curves=[])
        self.alive = True
        self.trainer: Trainer | None = None

    def guarded(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn``; a divergence or failure ends this replica and is recorded."""
        try:
            return fn()
        except StopTrial:
            raise
        except Exception as exc:  # Diverged, or a runtime failure (e.g. out of memory): a result
            self.end(exc)
        return None

    def end(self, exc: Exception) -> None:
        """End this replica with a divergence or a runtime failure, recorded."""
        self.alive = False
        if isinstance(exc, Diverged):
            self.rec.update(status="diverged", diverged_phase=exc.phase, diverged_step=exc.step,
                            error=str(exc))
        else:
            self.rec.update(status="error", error=f"{type(exc).__name__}: {exc}")

    def emit(self, m: dict[str, Any]) -> dict[str, Any]:
        m["elapsed_s"] = time.perf_counter() - self.t_start
        self.rec["curves"].append({k: m.get(k) for k in CURVE_FIELDS})
        return m

    def setup(self) -> None:
        self.task = on_device(self.task, self.device)
        cfg, task = self.cfg, self.task
        self.net = self.net.to(self.device)
        self.rec["n_params"] = self.net.n_params
        n = min(cfg.warmup.batch_size, len(task.train))
        self.star_x = task.train.batch(torch.arange(n))[0].to(self.device)  # fixed VAA* batch
        self.rec["vaa_init"] = measure_vaa(self.net, task.train, cfg.vaa, self.measure_gen,
                                           self.device)
        self.rec["vaa_star_init"] = _vaa_star_now(self.net, self.star_x, cfg, self.measure_gen)

    def after_warmup(self) -> None:
        cfg = self.cfg
        self.rec["vaa_warm"] = measure_vaa(self.net, self.task.train, cfg.vaa, self.measure_gen,
                                           self.device)
        self.rec["vaa_star_warm"] = _vaa_star_now(self.net, self.star_x, cfg, self.measure_gen)

    def finish(self) -> None:
        self.rec["test_loss"], self.rec["test_accuracy"] = evaluate(
            self.net, self.task, self.task.test, self.device)
        self.rec["status"] = "completed"


def mean(values: list[Any]) -> Any:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]
    return sum(nums) / len(nums) if nums else None


def mean_metrics(ms: list[dict[str, Any]]) -> dict[str, Any]:
    """One metric dict from the replicas' dicts of the same step: numbers averaged."""
    out = {"phase": ms[0]["phase"], "step": ms[0]["step"], "replicas_reporting": len(ms)}
    for key in ms[0]:
        if key not in out:
            out[key] = mean([m.get(key) for m in ms])
    return out


def report_step(replicas: list[Replica], group: list[Replica],
                 entries: Sequence[dict[str, Any] | Exception | None], counter: str, first: int,
                 report: Report) -> None:
    """Record one lockstep step's entries (metrics, or the exception that ended a replica) and
    report their mean (one replica: its own metrics). ``rec[counter]`` counts the steps done,
    which are numbered from ``first``."""
    ms = []
    for r, e in zip(group, entries, strict=True):
        if e is None or not r.alive:
            continue
        if isinstance(e, Exception):
            r.end(e)
            continue
        r.rec[counter] = e["step"] + 1 - first
        ms.append(r.emit(e))
    if ms:
        report(mean_metrics(ms) if len(replicas) > 1 else ms[0])


def warmup_all(replicas: list[Replica], report: Report) -> None:
    """Warm up every live replica in lockstep, their scans grouped (pipeline.core.warmup)."""
    group = [r for r in replicas if r.alive and r.cfg.warms_up]
    if not group:
        return
    t0 = time.perf_counter()
    cfg, device = group[0].cfg.warmup, group[0].device
    pools = [pooled(r.task) if cfg.pool == "all" else r.task.train for r in group]
    steps = warmup_loop_group([r.net for r in group], pools, cfg, [r.gen for r in group], device)
    try:
        while True:
            try:
                entries = next(steps, None)
            except Exception as exc:  # a runtime failure of the grouped step ends all of them
                for r in group:
                    if r.alive:
                        r.end(exc)
                return
            if entries is None:
                return
            report_step(replicas, group, entries, "warmup_steps_run", 0, report)
    finally:
        for r in group:
            r.rec["warmup_s"] = time.perf_counter() - t0


def train_all(replicas: list[Replica], report: Report) -> None:
    """Train every live replica in lockstep, epoch by epoch, their passes grouped (pipeline.core.train)."""
    group = [r for r in replicas if r.alive]
    if not group:
        return
    t0 = time.perf_counter()
    for r in group:
        r.trainer = Trainer(r.net, r.task, r.cfg, r.gen, r.measure_gen, r.device)
    try:
        for epoch in range(1, group[0].cfg.train.epochs + 1):
            live = [r for r in group if r.alive]
            if not live:
                return
            try:
                entries = epoch_group([r.trainer for r in live], epoch)  # type: ignore[misc]
            except Exception as exc:  # a runtime failure of the grouped epoch ends all of them
                for r in live:
                    r.end(exc)
                return
            report_step(replicas, live, entries, "epochs_run", 1, report)
        for r in group:
            if r.alive:
                r.trainer.restore_best()  # type: ignore[union-attr]
    finally:
        for r in group:
            r.rec["train_s"] = time.perf_counter() - t0
            r.rec["best_valid_loss"] = _finite_or_none(r.trainer.best_loss)  # type: ignore[union-attr]
            r.rec["best_epoch"] = r.trainer.best_epoch or None  # type: ignore[union-attr]


_STATUS_RANK = {"error": 3, "diverged": 2, "pruned": 1, "completed": 0}


def combine(cfg: TrialConfig, replicas: list[Replica]) -> dict[str, Any]:
    """The trial's record: the replica's own for one seed; else means over seeds and ``per_seed``."""
    if len(replicas) == 1:
        return replicas[0].rec
    recs = [r.rec for r in replicas]
    top: dict[str, Any] = {**cfg.to_dict(), **dict.fromkeys(RECORD_FIELDS)}
    status = max((r["status"] for r in recs), key=lambda s: _STATUS_RANK[s])
    top["status"] = status
    errors = [f"seed {r['seed']}: {r['error']}" for r in recs if r["error"]]
    top["error"] = "; ".join(errors) or None
    first_bad = next((r for r in recs if r["status"] == "diverged"), None)
    if first_bad is not None:
        top["diverged_phase"], top["diverged_step"] = (first_bad["diverged_phase"],
                                                       first_bad["diverged_step"])
    for key in ("vaa_init", "vaa_star_init", "vaa_warm", "vaa_star_warm", "best_valid_loss",
                "test_loss", "test_accuracy", "warmup_s", "train_s"):
        top[key] = mean([r[key] for r in recs])
    for key in ("epochs_run", "warmup_steps_run", "n_params"):
        top[key] = max((r[key] or 0) for r in recs)
    top["best_epoch"] = None
    for key in ("device", "native_kernels", "flush_denormal"):
        top[key] = recs[0][key]
    top["curves"] = []
    top["per_seed"] = recs
    return top
