"""One trial: seed, build task and model, measure VAA, warm up, train, evaluate; return a record.

``run_trial(config, report) -> record`` is the only entry point the sweep uses. ``report(metrics)``
receives every warm-up step's and every epoch's metrics and may raise :class:`StopTrial` (pruning).
A NaN/Inf ends the trial with status ``diverged`` and a full record; it never raises.
The command line (no Ray) is :mod:`pipeline.trial`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pipeline.core.config import TrialConfig
from pipeline.core.device import flush_denormals, resolve_device
from pipeline.core.outcomes import CURVE_FIELDS, RECORD_FIELDS, StopTrial
from pipeline.core.replicas import Replica, Report, combine, mean, train_all, warmup_all
from pipeline.core.scans import native

__all__ = ["CURVE_FIELDS", "RECORD_FIELDS", "StopTrial", "run_trial"]

def run_trial(config: TrialConfig | Mapping[str, Any], report: Report | None = None
              ) -> dict[str, Any]:
    """Run one trial and return its flat record.

    With ``replicas = R > 1`` the trial trains the seeds ``seed .. seed + R - 1`` in lockstep (each
    exactly as a one-seed trial with that seed would run), reports the mean over seeds of every
    step's metrics (the sweep prunes on the mean validation loss), and returns a record whose
    metrics are means over seeds, with the seeds' own records in ``per_seed``.

    Args:
        config: a :class:`TrialConfig` or flat dotted keys.
        report: called with each metric dict: ``{"phase": "setup", ...}`` (initial VAA), the
            warm-up steps, ``{"phase": "warmed", ...}``, then the epochs; may raise StopTrial.

    Returns:
        Every flat config key, the fields of ``RECORD_FIELDS`` and ``curves`` (a list of dicts
        with ``CURVE_FIELDS``); with replicas, ``per_seed``.

    Raises:
        ValueError, FileNotFoundError: bad config or missing data (before anything runs).
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    report = report or (lambda m: None)
    device = resolve_device(cfg.device)
    mode = {"flush_denormal": flush_denormals() if device.type == "cpu" else None,
            "native_kernels": native.runs_on(device)}
    t_start = time.perf_counter()
    seeds = [cfg.seed + r for r in range(cfg.replicas)]
    replicas = [Replica(cfg.replace(seed=s, replicas=1) if cfg.replicas > 1 else cfg, device,
                         t_start, mode) for s in seeds]

    def each(method: str) -> None:
        for r in replicas:
            if r.alive:
                r.guarded(getattr(r, method))

    def summary(phase: str, keys: tuple[str, ...], **same: Any) -> None:
        live = [r.rec for r in replicas if r.alive]
        if live:
            report({"phase": phase, **{k: mean([rec[k] for rec in live]) for k in keys}, **same})

    try:
        each("setup")
        summary("setup", ("n_params", "vaa_init", "vaa_star_init"), **mode)  # a pruned row keeps it
        warmup_all(replicas, report)
        each("after_warmup")
        summary("warmed", ("vaa_warm", "vaa_star_warm", "warmup_s"))
        train_all(replicas, report)
        each("finish")
    except StopTrial:
        for r in replicas:
            if r.alive:
                r.alive = False
                r.rec["status"] = "pruned"
    return combine(cfg, replicas)
