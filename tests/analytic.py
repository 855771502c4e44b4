"""Analytic objectives and spaces for the sweep tests (no RNN): ``run_trial``-compatible functions.

Ray workers import these by name (``tests.analytic:analytic``); the session fixture in
``conftest.py`` puts this folder on the workers' ``PYTHONPATH``.

The validation loss of epoch ``e`` is ``level + (log10(lr) + 3)^2 + 1/e``: it depends on the
nuisance parameter (best at lr = 1e-3) and, through ``level``, on the scientific point, where
``level`` is 100 for an LSTM and 0 otherwise (pruning across points would prune every LSTM).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from search_spaces.space import Inactive, LogUniform, SearchSpace, Smoke

MODULE = __name__


def _curve(config: Mapping[str, Any], report: Callable[[dict[str, Any]], None] | None, *,
           sleep: float = 0.0, level_fn: Callable[[Mapping[str, Any]], float] | None = None
           ) -> dict[str, Any]:
    report = report or (lambda m: None)
    flat = dict(config)
    lr = float(flat.get("train.lr", 1e-3))
    epochs = int(flat.get("train.epochs", 4))
    level = level_fn(flat) if level_fn else (100.0 if flat.get("model.cell") == "lstm" else 0.0)
    curves: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for k in range(int(flat.get("warmup.steps", 0))):
        m = {"phase": "warmup", "step": k, "loss": 1.0 / (k + 1), "vaa_star": 0.5,
             "elapsed_s": time.perf_counter() - t0}
        curves.append({**m, "train_loss": m["loss"]})
        report(m)
    best, best_epoch = math.inf, None
    for e in range(1, epochs + 1):
        time.sleep(sleep)
        v = level + (math.log10(lr) + 3) ** 2 + 1.0 / e
        if lr > 1.0 and e == 2:  # a learning rate that blows up: diverged at epoch 2
            return {**flat, "status": "diverged", "diverged_phase": "train", "diverged_step": e,
                    "error": "non-finite loss", "best_valid_loss": best, "best_epoch": best_epoch,
                    "epochs_run": e - 1, "curves": curves, "n_params": 1}
        m = {"phase": "train", "step": e, "train_loss": v, "valid_loss": v, "valid_accuracy": None,
             "vaa": 0.5, "vaa_star": None, "elapsed_s": time.perf_counter() - t0}
        curves.append(m)
        report(m)
        if v < best:
            best, best_epoch = v, e
    return {**flat, "status": "completed", "error": None, "best_valid_loss": best,
            "best_epoch": best_epoch, "test_loss": best, "test_accuracy": None,
            "epochs_run": epochs, "n_params": 1, "vaa_init": 0.1, "vaa_warm": 0.5,
            "warmup_s": 0.0, "train_s": time.perf_counter() - t0, "device": "cpu",
            "curves": curves}


def analytic(config: Mapping[str, Any], report: Callable[[dict[str, Any]], None] | None = None
             ) -> dict[str, Any]:
    """Fast analytic trial."""
    return _curve(config, report)


def analytic_slow(config: Mapping[str, Any],
                  report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """0.5 s per epoch: slow enough to kill the driver in the middle of a sweep."""
    return _curve(config, report, sleep=0.5)


def analytic_brief(config: Mapping[str, Any],
                   report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """0.2 s per epoch: trials of about a second, for the fault-injection tests."""
    return _curve(config, report, sleep=0.2)


def analytic_dies_once(config: Mapping[str, Any],
                       report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The first attempt of each trial kills its own process (a marker file per trial, in the
    folder given as ``task.data_dir``); the retry runs normally."""
    from ray import tune
    marker = os.path.join(str(config["task.data_dir"]), tune.get_context().get_trial_id())
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return _curve(config, report)


def analytic_flat(config: Mapping[str, Any],
                  report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every trial of a point has the same curve (level by point, independent of the lr): pruning
    within a point never prunes; pruning across points would prune every LSTM."""
    return _curve({**config, "train.lr": 1e-3}, report)


def space(objective: str = "analytic", **changes: Any) -> SearchSpace:
    """A small analytic space: cells gru/lstm x warm-up steps {0, 2} x fraction {0.5, 1.0}."""
    base = SearchSpace(
        name="analytic",
        description="analytic test objective",
        scientific={"model.cell": ("gru", "lstm"), "warmup.steps": (0, 2),
                    "warmup.fraction": (0.5, 1.0)},
        nuisance={"train.lr": LogUniform(1e-5, 1e-1)},
        fixed={"train.epochs": 4, "device": "cpu"},
        samples_per_point=2,
        inactive=(Inactive("warmup.fraction", "warmup.steps", 0, 0.0),),
        smoke=Smoke(samples_per_point=1),
        objective=f"{MODULE}:{objective}",
    )
    return base if not changes else __import__("dataclasses").replace(base, **changes)


SPACE = space()
SLOW = space("analytic_slow", scientific={"model.cell": ("gru",), "warmup.steps": (0,),
                                          "warmup.fraction": (1.0,)}, samples_per_point=6)
DIES_ONCE = space("analytic_dies_once", scientific={"model.cell": ("gru",), "warmup.steps": (0,),
                                                    "warmup.fraction": (1.0,)}, samples_per_point=2)
FLAT = space("analytic_flat", scientific={"model.cell": ("gru", "lstm"), "warmup.steps": (0,),
                                          "warmup.fraction": (1.0,)}, samples_per_point=6)
PRUNABLE = space(scientific={"model.cell": ("gru",), "warmup.steps": (0,),
                             "warmup.fraction": (1.0,)}, samples_per_point=10,
                 fixed={"train.epochs": 6, "device": "cpu"})
DIVERGING = space(scientific={"model.cell": ("gru",), "warmup.steps": (0,),
                              "warmup.fraction": (1.0,)}, samples_per_point=6,
                  nuisance={"train.lr": LogUniform(1e-2, 1e2)})
FAULTS = space("analytic_brief", samples_per_point=4,
               nuisance={"train.lr": LogUniform(1e-4, 1e1)})
"""6 points x 4 samples of one-second trials, some pruned, some diverged (lr > 1)."""
