"""The Tune trainable: one Tune trial is one call of the space's objective (``run_trial``).

It forwards every training epoch's metrics to ``tune.report`` (where the pruning scheduler sees
them), keeps the warm-up steps and sends them once with the first epoch, and finishes with a
``final`` report that carries the whole record as JSON for the driver's Parquet writer.

A pruned trial is stopped by Tune at its ``tune.report`` call and returns nothing, so the driver
rebuilds its row from the reports it saw (see :mod:`pipeline.orchestration.callbacks`).

Failures: an exception inside the objective is a *result* (status ``error``, recorded, not retried,
since rerunning a deterministic failure gives the same failure); only a dead process or node reaches
Tune's ``FailureConfig`` and is retried.
"""

from __future__ import annotations

import importlib
import json
import math
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

import ray
from ray import tune

__all__ = ["META_PREFIX", "make_trainable", "trainable"]

META_PREFIX = "sweep."
"""Config keys the searcher adds for bookkeeping (``sweep.point``, ``sweep.study``, ...); they are
stripped before the objective sees the config."""

CURVE_KEYS = ("phase", "step", "train_loss", "valid_loss", "valid_accuracy", "vaa", "vaa_star",
              "elapsed_s")

_OBJECTIVES: dict[str, Callable[..., dict[str, Any]]] = {}


def resolve(path: str) -> Callable[..., dict[str, Any]]:
    """Import ``module:function`` (cached per worker process)."""
    if path not in _OBJECTIVES:
        module, _, name = path.partition(":")
        _OBJECTIVES[path] = getattr(importlib.import_module(module), name)
    return _OBJECTIVES[path]


def _cpu_share() -> int:
    """This trial's CPU share as a thread count (at least 1)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or None


def _placement() -> dict[str, Any]:
    """Where this trial runs: host, Ray node id, torch threads, CPU model, and with a GPU its
    name and the CUDA and cuDNN versions torch was built with."""
    info: dict[str, Any] = {"host": socket.gethostname(), "gpu_name": None,
                            "node_id": ray.get_runtime_context().get_node_id(),
                            "threads": _cpu_share(), "cpu_model": _cpu_model(),
                            "cuda_version": None, "cudnn_version": None}
    torch = sys.modules.get("torch")
    if torch is not None and ray.get_gpu_ids() and torch.cuda.is_available():
        info["gpu_name"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
        cudnn = torch.backends.cudnn.version()
        info["cudnn_version"] = None if cudnn is None else str(cudnn)
    return info


class _Forwarder:
    """The ``report`` callback handed to the objective."""

    def __init__(self, placement: Mapping[str, Any]) -> None:
        self.placement = dict(placement)
        self.warmup: list[dict[str, Any]] | None = []
        self.summary: dict[str, Any] = {}

    def __call__(self, metrics: Mapping[str, Any]) -> None:
        phase = metrics.get("phase")
        if phase == "warmup":
            if self.warmup is not None:
                row = {k: metrics.get(k) for k in CURVE_KEYS}
                row["train_loss"] = metrics.get("loss")
                self.warmup.append(row)
            return
        if phase != "train":  # any other phase: record-level values known early (kept, sent once)
            self.summary.update({k: v for k, v in metrics.items() if k != "phase"})
            return
        out = {k: metrics.get(k) for k in CURVE_KEYS}
        if self.warmup is not None:  # the warm-up curve travels once, with the first epoch
            out["warmup_curve"] = json.dumps(self.warmup)
            out.update(self.placement)
            self.warmup = None
        if self.summary:
            out["summary_json"] = json.dumps(self.summary, default=str)
            self.summary = {}
        tune.report(out)  # raises SystemExit here when the scheduler stopped (pruned) this trial


def objective_value(record: Mapping[str, Any], metric: str) -> float | None:
    """The value told to Optuna: a completed record's ``best_<metric>`` when finite, else None
    (a diverged or failed trial has no usable network and is told FAIL)."""
    value = record.get(f"best_{metric}")
    if record.get("status") != "completed":
        return None
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def trainable(config: dict[str, Any], *, objective: str, metric: str) -> None:
    """Run one trial under Tune.

    Args:
        config: flat config keys plus the searcher's ``sweep.*`` bookkeeping keys.
        objective: ``module:function`` with ``run_trial``'s signature.
        metric: the per-epoch metric the pruner uses (``valid_loss``).
    """
    flat = {k: v for k, v in config.items() if not k.startswith(META_PREFIX)}
    fn = resolve(objective)
    if "torch" in sys.modules:  # threads = this trial's CPU share (Ray also sets OMP_NUM_THREADS)
        sys.modules["torch"].set_num_threads(_cpu_share())
    placement = _placement()
    try:
        record = fn(flat, _Forwarder(placement))
    except Exception as exc:  # bad config or missing data: a deterministic failure, not retried
        record = {**flat, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    placement = _placement()  # the GPU may only be known once the objective imported torch
    record.update({k: v for k, v in placement.items() if v is not None})
    tune.report({"phase": "final", "status": record.get("status"),
                 "objective": objective_value(record, metric),
                 "epochs_run": record.get("epochs_run"),
                 "record_json": json.dumps(record, default=str)})


def make_trainable(*, objective: str, metric: str, cpus: float, gpus: float) -> Any:
    """The trainable with its parameters and resources bound."""
    bound = tune.with_parameters(trainable, objective=objective, metric=metric)
    return tune.with_resources(bound, {"cpu": cpus, "gpu": gpus})
