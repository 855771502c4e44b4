"""A Tune Searcher that runs one Optuna study per scientific point, through Optuna's ask/tell API.

Why not Tune's ``OptunaSearch``: it installs Optuna's no-op pruner and never asks ``should_prune``,
and with Tune's ASHA it records stopped trials as COMPLETE with truncated values, which misleads
the sampler. Here:

- the grid of scientific points is walked round-robin; each point owns a study (named
  ``<experiment>/<point>``) that tunes only the nuisance parameters, so a trial is only ever
  compared with trials at its own point, by the sampler and by the pruner;
- :meth:`PointStudySearcher.report` (called by
  :class:`pipeline.orchestration.scheduler.OptunaPruningScheduler`
  on each epoch) reports the metric to the Optuna trial and asks the study's pruner; a pruned trial
  is later told ``PRUNED``, a completed one ``COMPLETE`` with its best metric, and a diverged or
  failed one ``FAIL`` (it has no usable network, so it must never be a study's best);
- the studies live in one ``JournalStorage(JournalFileBackend(path))`` file written by the driver
  only (safe for a single writer; optuna-dashboard opens it).

Samplers are seeded per point from the sweep seed, so the same seed gives the same suggestions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search import Searcher

from pipeline.orchestration.trainable import META_PREFIX
from search_spaces.space import Choice, LogUniform, SearchSpace, Uniform, point_key

__all__ = ["PRUNERS", "SAMPLERS", "PointStudySearcher", "check_journal", "make_pruner",
           "make_sampler", "study_states"]

SAMPLERS = ("tpe", "random", "qmc")
PRUNERS = ("median", "halving", "hyperband", "none")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler: ``tpe`` (default), ``random`` or ``qmc`` (scrambled Sobol)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        if importlib.util.find_spec("scipy") is None:
            raise ValueError("--sampler qmc needs scipy, which is not installed (pip install scipy)")
        with warnings.catch_warnings():  # experimental since Optuna 3.0, and stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(scramble=True, seed=seed,
                                              warn_asynchronous_seeding=False)
    raise ValueError(f"unknown sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """An Optuna pruner sized to ``epochs`` (steps are 1-based epochs).

    ``median`` prunes from epoch ``max(1, epochs // 4) + 1`` on, once 2 trials at the point have
    completed; ``halving`` (successive halving) and ``hyperband`` use the epoch as the resource,
    with a minimum of ``max(1, epochs // 4)`` epochs.
    """
    start = max(1, epochs // 4)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=start + 1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=start)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=start, max_resource=max(epochs, start))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; valid pruners: {', '.join(PRUNERS)}")


def _distribution(dist: Any) -> BaseDistribution:
    if isinstance(dist, LogUniform):
        return FloatDistribution(dist.low, dist.high, log=True)
    if isinstance(dist, Uniform):
        return FloatDistribution(dist.low, dist.high)
    if isinstance(dist, Choice):
        return CategoricalDistribution(dist.values)
    raise TypeError(f"unsupported distribution {dist!r}")


def _point_seed(seed: int, key: str) -> int:
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class PointStudySearcher(Searcher):
    """One Optuna study per scientific point; round-robin over points; ask/tell.

    Args:
        space: the search space (after ``--smoke``/``--set``).
        experiment: the experiment name (study names are ``<experiment>/<point>``).
        journal: path of the Optuna journal file.
        sampler: one of :data:`SAMPLERS`.
        pruner: one of :data:`PRUNERS`.
        seed: sweep seed: seeds the samplers and is the trials' base ``seed`` unless fixed.
        epochs: epochs per trial (sizes the pruner).
    """

    def __init__(self, space: SearchSpace, *, experiment: str, journal: str,
                 sampler: str = "tpe", pruner: str = "median", seed: int = 0,
                 epochs: int = 1) -> None:
        # No metric is declared to Tune: it would then demand it in every result, the final one
        # included; the pruning scheduler reads ``space.metric`` itself.
        super().__init__()
        self.space, self.experiment, self.journal = space, experiment, journal
        self.seed, self.sampler_name, self.pruner_name, self.epochs = seed, sampler, pruner, epochs
        make_sampler(sampler, 0), make_pruner(pruner, epochs)  # fail early on bad names
        self.points = space.points()
        self.keys = [point_key(p) for p in self.points]
        self.distributions = {k: _distribution(d) for k, d in space.nuisance.items()}
        # Dynamic state (saved and restored with the experiment):
        self.issued = [0] * len(self.points)       # trials asked per point
        self.cursor = 0                            # round-robin position
        self.trials: dict[str, tuple[int, int]] = {}  # Tune trial id -> (point, Optuna number)
        self.reported: dict[str, list[int]] = {}   # Tune trial id -> epochs reported to Optuna
        self.pruned: set[str] = set()
        self.told: set[str] = set()                # Tune trial ids whose Optuna trial is finished
        self.samplers = {i: make_sampler(sampler, _point_seed(seed, k))
                         for i, k in enumerate(self.keys)}
        self._studies: dict[int, optuna.Study] = {}
        self._storage: JournalStorage | None = None
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    # ----------------------------------------------------------------------------- Optuna side
    @property
    def total(self) -> int:
        """Trials in the whole sweep (points x samples per point)."""
        return len(self.points) * self.space.samples_per_point

    def study_name(self, i: int) -> str:
        return f"{self.experiment}/{self.keys[i]}"

    def storage(self) -> JournalStorage:
        if self._storage is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # also after unpickling
            self._storage = JournalStorage(JournalFileBackend(self.journal))
        return self._storage

    def study(self, i: int) -> optuna.Study:
        """The study of point ``i`` (created on first use, loaded if it exists)."""
        if i not in self._studies:
            study = optuna.create_study(
                study_name=self.study_name(i), storage=self.storage(), sampler=self.samplers[i],
                pruner=make_pruner(self.pruner_name, self.epochs), load_if_exists=True,
                direction="minimize" if self.space.mode == "min" else "maximize")
            if "point" not in study.user_attrs:
                for k, v in (("space", self.space.name), ("experiment", self.experiment),
                             ("point", self.points[i]), ("metric", self.space.metric)):
                    study.set_user_attr(k, v)
            self._studies[i] = study
        return self._studies[i]

    def _storage_id(self, trial_id: str) -> int:
        """The storage's id of the Optuna trial behind a Tune trial (public storage API)."""
        i, number = self.trials[trial_id]
        storage = self.storage()
        sid = storage.get_study_id_from_name(self.study_name(i))
        return storage.get_trial_id_from_study_id_trial_number(sid, number)

    def _optuna_trial(self, trial_id: str) -> optuna.Trial:
        # The Trial constructor is public, if not advertised; it is how ask/tell resumes a trial.
        return optuna.Trial(self.study(self.trials[trial_id][0]), self._storage_id(trial_id))

    # ----------------------------------------------------------------------------- Tune side
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        n = len(self.points)
        for k in range(n):
            i = (self.cursor + k) % n
            if self.issued[i] < self.space.samples_per_point:
                break
        else:
            return Searcher.FINISHED
        self.cursor = (i + 1) % n
        trial = self.study(i).ask(self.distributions)
        trial.set_user_attr("tune_trial_id", trial_id)
        self.issued[i] += 1
        self.trials[trial_id] = (i, trial.number)
        config = self.space.trial_config(self.points[i], trial.params, seed=self.seed)
        config.update({f"{META_PREFIX}point": self.keys[i],
                       f"{META_PREFIX}study": self.study_name(i),
                       f"{META_PREFIX}optuna_trial": trial.number})
        return config

    def report(self, trial_id: str, step: int, value: float) -> bool:
        """Report epoch ``step``'s metric to the trial's study; True when it should be pruned.

        A step reported before (a retried or resumed trial repeats its epochs) is not reported
        again, and only the pruner's earlier answer counts.
        """
        if trial_id not in self.trials or trial_id in self.told or not math.isfinite(value):
            return False
        seen = self.reported.setdefault(trial_id, [])
        if step in seen:
            return trial_id in self.pruned
        trial = self._optuna_trial(trial_id)
        trial.report(value, step)
        seen.append(step)
        if trial.should_prune():
            self.pruned.add(trial_id)
        return trial_id in self.pruned

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.trials:
            return
        if result is None and not error:
            return  # removed before it ran (an interrupted experiment): it will be resumed
        i, number = self.trials[trial_id]
        status = "error" if error else (result or {}).get("status")
        value = (result or {}).get("objective")
        if trial_id in self.pruned or status == "pruned":
            state, values = TrialState.PRUNED, None
        elif status == "completed" and value is not None and math.isfinite(value):
            state, values = TrialState.COMPLETE, float(value)
        else:  # error, or diverged: no usable network, so never a study's best trial
            state, values = TrialState.FAIL, None
        sid = self._storage_id(trial_id)
        if not self.storage().get_trial(sid).state.is_finished():  # else: told before a restart
            self.storage().set_trial_user_attr(sid, "status", status or "unknown")
            self.study(i).tell(number, values, state=state)
        self.told.add(trial_id)
        self.reported.pop(trial_id, None)

    def close_orphans(self) -> int:
        """Mark FAIL the RUNNING Optuna trials of this experiment that no Tune trial owns (asked just
        before the driver was killed, after the last saved state). Returns how many."""
        owned = {(i, n) for i, n in self.trials.values()}
        existing = set(optuna.get_all_study_names(self.storage()))
        closed = 0
        for i in range(len(self.points)):
            if self.study_name(i) not in existing:
                continue
            for t in self.study(i).get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if (i, t.number) not in owned:
                    self.study(i).tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                    closed += 1
        return closed

    # ----------------------------------------------------------------------------- persistence
    _STATE = ("issued", "cursor", "trials", "reported", "pruned", "told", "samplers")

    def get_state(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._STATE}

    def set_state(self, state: dict[str, Any]) -> None:
        for k in self._STATE:
            setattr(self, k, state[k])
        self._studies.clear()  # their samplers were replaced

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
        self.close_orphans()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_studies"], state["_storage"] = {}, None  # reopened from the journal
        return state


def check_journal(path: str) -> None:
    """Raise ValueError when the journal file exists but is not a clean journal.

    Optuna skips a malformed *last* line (it may be mid-write by another process), but once a new
    line is appended after it the whole journal becomes unreadable; so every line is checked here.
    """
    if not os.path.exists(path):
        return
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    raise ValueError(f"line {number} is incomplete")
                json.loads(line)
        JournalStorage(JournalFileBackend(path)).get_all_studies()
    except (OSError, ValueError) as exc:
        raise ValueError(f"corrupt results file {path}: {exc}") from None


def study_states(journal: str, names: Sequence[str]) -> dict[str, int]:
    """Trial states of the named studies in a journal: ``{"COMPLETE": n, "PRUNED": m, ...}``."""
    storage = JournalStorage(JournalFileBackend(journal))
    counts: dict[str, int] = {}
    for name in names:
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts
