"""The per-point Optuna searcher and the pruning scheduler, driven by hand (no Ray cluster).

The analytic objective of ``tests.analytic`` plays the trials: the searcher suggests, the
scheduler sees each epoch's result, and the searcher is told how the trial ended, in the order Tune
calls them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from pipeline.orchestration.scheduler import OptunaPruningScheduler
from pipeline.orchestration.searcher import PointStudySearcher
from pipeline.orchestration.trainable import resolve
from tests import analytic as support


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _searcher(tmp_path: Path, space: Any = support.SPACE, **kw: Any) -> PointStudySearcher:
    kw = {"experiment": "e", "journal": str(tmp_path / "j.journal"), "epochs": 4, **kw}
    return PointStudySearcher(space, **kw)


def _play(searcher: PointStudySearcher, n: int, *, prefix: str = "t") -> list[dict[str, Any]]:
    """Run ``n`` trials one after the other; return each config with its outcome."""
    scheduler = OptunaPruningScheduler(searcher)
    objective = resolve(searcher.space.objective)
    played = []
    for k in range(n):
        tid = f"{prefix}{k}"
        config = searcher.suggest(tid)
        if config == searcher.FINISHED:
            break
        flat = {key: v for key, v in config.items() if not key.startswith("sweep.")}
        epochs, status = 0, "completed"
        record = objective(flat)
        for m in record["curves"]:
            if m["phase"] != "train":
                continue
            epochs = m["step"]
            if scheduler.on_trial_result(None, _Trial(tid), m) == TrialScheduler.STOP:
                status = "pruned"
                break
        result = {"phase": "final", "status": status, "objective": record["best_valid_loss"]}
        searcher.on_trial_complete(tid, result if status == "completed" else
                                   {"phase": "train", "step": epochs})
        played.append({**config, "status": status, "epochs": epochs})
    return played


def _states(searcher: PointStudySearcher) -> dict[str, list[TrialState]]:
    return {searcher.study_name(i): [t.state for t in searcher.study(i).get_trials()]
            for i in range(len(searcher.points))}


def test_round_robin_over_points_then_finished(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path)
    assert len(searcher.points) == 6 and searcher.total == 12
    configs = [searcher.suggest(f"t{k}") for k in range(12)]
    points = [c["sweep.point"] for c in configs]
    assert points[:6] == points[6:] and len(set(points[:6])) == 6
    assert searcher.suggest("t12") == searcher.FINISHED
    for c in configs:
        assert c["sweep.study"] == f"e/{c['sweep.point']}"
        assert 1e-5 <= c["train.lr"] <= 1e-1 and c["replicas"] == 1 and c["seed"] == 0


def test_same_seed_same_suggestions_other_seed_different(tmp_path: Path) -> None:
    def lrs(seed: int, where: str) -> list[float]:
        s = _searcher(tmp_path / where, seed=seed, space=dataclasses.replace(
            support.SPACE, samples_per_point=4))
        (tmp_path / where).mkdir()
        return [c["train.lr"] for c in _play(s, 24)]
    first, again, other = lrs(1, "a"), lrs(1, "b"), lrs(2, "c")
    assert first == again
    assert first != other


def test_pruned_trials_stop_early_and_are_pruned_in_their_study(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path, space=support.PRUNABLE, epochs=6)
    played = _play(searcher, 10)
    pruned = [p for p in played if p["status"] == "pruned"]
    assert pruned, "the analytic objective should get some trials pruned"
    assert all(p["epochs"] < 6 for p in pruned)
    (states,) = _states(searcher).values()
    assert states.count(TrialState.PRUNED) == len(pruned)
    assert states.count(TrialState.COMPLETE) == 10 - len(pruned)
    study = searcher.study(0)
    for t in study.get_trials(states=(TrialState.PRUNED,)):
        assert max(t.intermediate_values) < 6


def test_pruning_never_compares_trials_of_different_points(tmp_path: Path) -> None:
    # Within each point every trial has the same curve; the LSTM point is 100 worse. A pruner
    # comparing across points would prune every LSTM trial.
    searcher = _searcher(tmp_path, space=support.FLAT, epochs=4)
    played = _play(searcher, 12)
    assert [p["status"] for p in played] == ["completed"] * 12
    for name, states in _states(searcher).items():
        assert states == [TrialState.COMPLETE] * 6, name
    # ...whereas one shared study would have pruned the LSTM trials:
    shared = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                     n_warmup_steps=0))
    for cell in ("gru", "gru", "lstm"):
        t = shared.ask()
        for m in support.analytic({"model.cell": cell, "train.epochs": 4})["curves"]:
            t.report(m["valid_loss"], m["step"])
        shared.tell(t, state=TrialState.PRUNED) if t.should_prune() else shared.tell(t, 1.0)
    assert shared.trials[-1].state == TrialState.PRUNED


def test_failed_and_diverged_trials_are_told_fail(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path)
    for k in range(3):
        searcher.suggest(f"t{k}")
    searcher.on_trial_complete("t0", error=True)
    searcher.on_trial_complete("t1", {"phase": "final", "status": "diverged", "objective": None})
    searcher.on_trial_complete("t2", {"phase": "final", "status": "diverged", "objective": 2.0})
    trials = [t for i in range(3) for t in searcher.study(i).get_trials()]
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert [t.user_attrs["status"] for t in trials] == ["error", "diverged", "diverged"]
    assert [t.user_attrs["tune_trial_id"] for t in trials] == ["t0", "t1", "t2"]


def test_state_round_trip_and_orphans_closed(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path)
    searcher.suggest("t0")
    searcher.save(str(tmp_path / "state.pkl"))
    searcher.suggest("t1")  # asked after the last save: nobody owns it after a restore
    restored = _searcher(tmp_path)
    restored.restore(str(tmp_path / "state.pkl"))
    assert restored.trials == {"t0": (0, 0)} and restored.issued[:2] == [1, 0]
    orphan = restored.study(1).get_trials()
    assert [t.state for t in orphan] == [TrialState.FAIL]
    assert restored.study(0).get_trials()[0].state == TrialState.RUNNING
    # the same epoch reported twice (a retried trial) is reported once
    assert restored.report("t0", 1, 3.0) is False and restored.report("t0", 1, 3.0) is False
    assert restored.study(0).get_trials()[0].intermediate_values == {1: 3.0}
    assert not math.isnan(restored.study(0).get_trials()[0].intermediate_values[1])


def test_bad_sampler_or_pruner_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sampler"):
        _searcher(tmp_path, sampler="grid")
    with pytest.raises(ValueError, match="unknown pruner"):
        _searcher(tmp_path, pruner="asha")


@pytest.mark.parametrize("sampler, pruner", [("random", "halving"), ("qmc", "hyperband"),
                                             ("tpe", "none")])
def test_every_sampler_and_pruner_runs(tmp_path: Path, sampler: str, pruner: str) -> None:
    if sampler == "qmc" and importlib.util.find_spec("scipy") is None:
        with pytest.raises(ValueError, match="needs scipy"):
            _searcher(tmp_path, sampler=sampler)
        return
    searcher = _searcher(tmp_path, space=support.PRUNABLE, sampler=sampler, pruner=pruner,
                         epochs=6)
    played = _play(searcher, 10)
    assert len(played) == 10
    (states,) = _states(searcher).values()
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    if pruner == "none":
        assert set(states) == {TrialState.COMPLETE}
