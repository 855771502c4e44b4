"""The per-point Optuna searcher and the pruning scheduler, driven by hand (no Ray cluster).

The analytic objective of ``tests.analytic`` plays the trials: the searcher suggests, the
scheduler sees each epoch's result, and the searcher is told how the trial ended, in the order Tune
calls them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
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
        # the writer tells Optuna once the row is written:
        searcher.finish(tid, status, record["best_valid_loss"] if status == "completed" else None)
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
    searcher.on_trial_complete("t0", error=True)  # Tune's hook tells nothing...
    assert searcher.study(0).get_trials()[0].state == TrialState.RUNNING
    searcher.finish("t0", "error", None)            # ...the writer does, after the row
    searcher.finish("t1", "diverged", None)
    searcher.finish("t2", "diverged", 2.0)
    trials = [t for i in range(3) for t in searcher.study(i).get_trials()]
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert [t.user_attrs["status"] for t in trials] == ["error", "diverged", "diverged"]
    assert [t.user_attrs["tune_trial_id"] for t in trials] == ["t0", "t1", "t2"]
    assert [t.user_attrs["run_id"] for t in trials] == ["p0-s0", "p1-s0", "p2-s0"]


def _row(status: str, number: int, objective: float | None = None) -> dict[str, Any]:
    return {"status": status, "objective": objective, "optuna_trial": number}


def test_plan_reconciles_rows_and_studies_and_queues_exactly_the_missing_runs(
        tmp_path: Path) -> None:
    first = _searcher(tmp_path)  # 6 points x 2 samples
    for k in range(9):
        first.suggest(f"t{k}")  # p0..p5 s0, p0..p2 s1
    first.finish("t0", "completed", 1.5)   # p0-s0: row and tell
    first.finish("t1", "pruned", None)     # p1-s0: row and tell
    # p2-s0: its row was written, then the driver died before the tell
    # p3-s0 .. p2-s1: in flight (RUNNING, no row); t8 = p2-s1 was asked, never started
    first.study(4).ask()  # a trial asked just before the kill, before its run was attached
    recorded = {"p0-s0": _row("completed", 0, 1.5), "p1-s0": _row("pruned", 0),
                "p2-s0": _row("completed", 0, 2.5)}

    again = _searcher(tmp_path)
    rec = again.plan(recorded)
    assert (rec.planned, rec.recorded, rec.missing, rec.told, rec.resumed) == (12, 3, 9, 1, 6)
    assert rec.closed == [1] and rec.stale == 0
    assert again.study(2).get_trials()[0].state == TrialState.COMPLETE
    assert again.study(2).get_trials()[0].value == 2.5
    orphan = again.study(4).get_trials()[1]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["closed"] == "orphan"
    queued = [r.run_id for r, _ in again.queue]
    assert queued == ["p3-s0", "p4-s0", "p5-s0", "p0-s1", "p1-s1", "p2-s1", "p3-s1", "p4-s1",
                      "p5-s1"]
    # an interrupted run reruns under its own Optuna trial, with the same parameters
    old = first.study(3).get_trials()[0]
    config = again.suggest("u0")
    assert config["sweep.run"] == "p3-s0" and config["sweep.optuna_trial"] == old.number
    assert config["train.lr"] == old.params["train.lr"]
    assert len(again.study(3).get_trials()) == 1
    # a new run asks a new trial; the studies end one-to-one with the runs
    for k in range(1, 9):
        again.suggest(f"u{k}")
    assert again.suggest("u9") == again.FINISHED
    assert [len(again.study(i).get_trials()) for i in range(6)] == [2, 2, 2, 2, 3, 2]


def test_a_resumed_run_prunes_where_the_first_attempt_would_have(tmp_path: Path) -> None:
    first = _searcher(tmp_path, space=support.PRUNABLE, epochs=6)
    _play(first, 4)  # enough completed trials for the median pruner
    config = first.suggest("t-kill")
    number = config["sweep.optuna_trial"]
    first.report("t-kill", 1, 50.0)
    first.report("t-kill", 2, 50.0)  # then the driver is killed
    again = _searcher(tmp_path, space=support.PRUNABLE, epochs=6)
    rows = {t.user_attrs["run_id"]: _row(t.user_attrs["status"], t.number, t.value)
            for t in first.study(0).get_trials() if t.state.is_finished()}
    assert again.plan(rows).resumed == 1
    config = again.suggest("u")
    assert config["sweep.optuna_trial"] == number
    assert again.report("u", 1, 50.0) is False  # epoch 1 again: Optuna holds it; not asked
    assert again.report("u", 2, 50.0) is True   # epoch 2: pruned, as the first attempt was
    assert again.study(0).get_trials()[number].intermediate_values == {1: 50.0, 2: 50.0}


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


def test_a_trial_told_already_reports_nothing_more(tmp_path: Path) -> None:
    searcher = _searcher(tmp_path)
    searcher.suggest("t0")
    searcher.finish("t0", "completed", 1.0)
    assert searcher.report("t0", 3, 2.0) is False  # a late retry of a recorded run
    assert searcher.study(0).get_trials()[0].intermediate_values == {}


def test_the_journal_never_gets_an_append_after_a_cut_line(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage

    from pipeline.orchestration.journal import MendingJournalBackend, check_journal
    path = str(tmp_path / "j.journal")
    study = optuna.create_study(study_name="a", storage=JournalStorage(MendingJournalBackend(path)))
    study.tell(study.ask(), 1.0)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 6, "trial_id": 0, "val')  # another experiment's writer, killed
    with pytest.raises(ValueError, match="incomplete"):
        check_journal(path)
    again = optuna.load_study(study_name="a", storage=JournalStorage(MendingJournalBackend(path)))
    again.tell(again.ask(), 2.0)  # the append first cuts the dead writer's line
    check_journal(path)
    assert [t.value for t in optuna.load_study(
        study_name="a", storage=JournalStorage(MendingJournalBackend(path))).trials] == [1.0, 2.0]


def test_outcome_is_the_record_once_it_arrived_even_if_the_process_died() -> None:
    from pipeline.orchestration.callbacks import outcome

    class Ended:
        def __init__(self, last: dict[str, Any]) -> None:
            self.last_result = last

    final = {"phase": "final", "status": "completed"}
    assert outcome(Ended(final), error=True) == "completed"
    assert outcome(Ended({"phase": "train", "step": 2}), error=True) == "error"
    assert outcome(Ended({"phase": "train", "step": 2}), pruned=True) == "pruned"
    assert outcome(Ended({"phase": "train", "step": 2})) is None  # interrupted: not recorded
