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

import dataclasses
import hashlib
import importlib.util
import json
import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.trial import TrialState
from ray.tune.search import Searcher

from pipeline.orchestration.journal import MendingJournalBackend
from pipeline.orchestration.trainable import META_PREFIX
from search_spaces.space import Choice, LogUniform, SearchSpace, Uniform, point_key

__all__ = ["PRUNERS", "SAMPLERS", "PointStudySearcher", "Reconciliation", "Run", "make_pruner",
           "make_sampler", "parse_run_id"]

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


@dataclasses.dataclass(frozen=True)
class Run:
    """One planned run of the experiment: sample ``sample`` of scientific point ``point`` (its index
    in grid order). ``run_id`` is its stable identity, the ``trial_id`` of its Parquet rows."""

    point: int
    sample: int

    @property
    def run_id(self) -> str:
        return f"p{self.point}-s{self.sample}"


_RUN_ID = re.compile(r"p(\d+)-s(\d+)")


def parse_run_id(run_id: str) -> Run | None:
    """The run behind ``run_id`` (``p<point>-s<sample>``), or None for another kind of id."""
    m = _RUN_ID.fullmatch(str(run_id))
    return Run(int(m.group(1)), int(m.group(2))) if m else None


@dataclasses.dataclass
class Reconciliation:
    """What :meth:`PointStudySearcher.plan` found in the durable record."""

    planned: int = 0
    recorded: int = 0          # runs with a trials row (never run again)
    told: int = 0              # rows whose Optuna trial was still RUNNING: told now, from the row
    resumed: int = 0           # RUNNING Optuna trials without a row: run again under that trial
    closed: list[int] = dataclasses.field(default_factory=list)  # orphans marked FAIL, by number
    stale: int = 0             # finished Optuna trials without a row (written by an older version)

    @property
    def missing(self) -> int:
        return self.planned - self.recorded


class PointStudySearcher(Searcher):
    """One Optuna study per scientific point; round-robin over points; ask/tell.

    The plan is the set of runs (point, sample); :meth:`plan` reconciles it with the durable
    record (the Parquet rows and the studies) and queues exactly the runs without a row, so a
    resumed experiment needs none of Tune's saved state. The Optuna trial of a run is told only
    after its row is written (:meth:`finish`, called by the Parquet writer), so a row may lack
    its tell after a crash (told from the row on resume), but never the reverse.

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
        n = space.samples_per_point
        # Round-robin: every point's sample 0, then every point's sample 1, ...
        self.runs = [Run(i, s) for s in range(n) for i in range(len(self.points))]
        self.queue: list[tuple[Run, int | None]] = [(r, None) for r in self.runs]
        self.trials: dict[str, tuple[Run, int]] = {}  # Tune trial id -> (run, Optuna number)
        self.reported: dict[str, set[int]] = {}        # Tune trial id -> steps Optuna holds
        self.pruned: set[str] = set()
        self.halted = False                            # a write failed: hand out nothing more
        self._studies: dict[int, optuna.Study] = {}
        self._storage: JournalStorage | None = None
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    # ----------------------------------------------------------------------------- Optuna side
    @property
    def total(self) -> int:
        """Runs in the whole experiment (points x samples per point)."""
        return len(self.runs)

    @property
    def remaining(self) -> int:
        """Runs still to hand out in this session."""
        return len(self.queue)

    def study_name(self, i: int) -> str:
        return f"{self.experiment}/{self.keys[i]}"

    def storage(self) -> JournalStorage:
        if self._storage is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._storage = JournalStorage(MendingJournalBackend(self.journal))
        return self._storage

    def study(self, i: int) -> optuna.Study:
        """The study of point ``i`` (created on first use, loaded if it exists)."""
        if i not in self._studies:
            kw = {"study_name": self.study_name(i), "storage": self.storage(),
                  "sampler": make_sampler(self.sampler_name, _point_seed(self.seed, self.keys[i])),
                  "pruner": make_pruner(self.pruner_name, self.epochs)}
            try:  # loading first: create_study(load_if_exists) appends a line to the journal
                study = optuna.load_study(**kw)
            except KeyError:
                study = optuna.create_study(
                    **kw, load_if_exists=True,
                    direction="minimize" if self.space.mode == "min" else "maximize")
            if "point" not in study.user_attrs:
                for k, v in (("space", self.space.name), ("experiment", self.experiment),
                             ("point", self.points[i]), ("metric", self.space.metric)):
                    study.set_user_attr(k, v)
            self._studies[i] = study
        return self._studies[i]

    def _existing_studies(self) -> set[str]:
        return set(optuna.get_all_study_names(self.storage()))

    def _storage_id(self, run: Run, number: int) -> int:
        """The storage's id of Optuna trial ``number`` of the run's study (public storage API)."""
        storage = self.storage()
        sid = storage.get_study_id_from_name(self.study_name(run.point))
        return storage.get_trial_id_from_study_id_trial_number(sid, number)

    # ----------------------------------------------------------------------------- the plan
    def plan(self, recorded: Mapping[str, Mapping[str, Any]]) -> Reconciliation:
        """Reconcile the studies with the recorded rows and queue exactly the missing runs.

        Args:
            recorded: run id -> ``{"status", "objective", "optuna_trial"}`` of every run with a
                ``trials`` row (see :meth:`pipeline.analysis.results.Store.recorded`).

        A row whose Optuna trial is still RUNNING (the driver died between the row and the tell)
        is told now from the row. A RUNNING Optuna trial without a row (the run was in flight) is
        queued to run again under the same Optuna trial, with the same parameters. Any other
        RUNNING trial (asked, then the driver died before Tune started it twice) is told FAIL
        with ``user_attrs["closed"] = "orphan"``.
        """
        rec = Reconciliation(planned=len(self.runs))
        existing = self._existing_studies()
        resume: dict[Run, int] = {}
        for i in range(len(self.points)):
            if self.study_name(i) not in existing:
                continue
            study = self.study(i)
            for t in study.get_trials(deepcopy=False):
                sample = t.user_attrs.get("sample")
                run = Run(i, int(sample)) if isinstance(sample, int) else None
                row = recorded.get(run.run_id) if run else None
                if row is not None and row.get("optuna_trial") == t.number:
                    if t.state == TrialState.RUNNING:
                        self._tell(run, t.number, str(row.get("status")), row.get("objective"))
                        rec.told += 1
                elif t.state == TrialState.RUNNING:
                    if run is not None and row is None and run not in resume \
                            and run.sample < self.space.samples_per_point:
                        resume[run] = t.number
                    else:
                        self.storage().set_trial_user_attr(t._trial_id, "closed", "orphan")
                        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                        rec.closed.append(t.number)
                elif row is None and run is not None:
                    rec.stale += 1
        self.queue = []
        for run in self.runs:
            if run.run_id in recorded:
                rec.recorded += 1
            else:
                self.queue.append((run, resume.get(run)))
        rec.resumed = sum(1 for _, n in self.queue if n is not None)
        return rec

    # ----------------------------------------------------------------------------- Tune side
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.halted or not self.queue:
            return Searcher.FINISHED
        run, number = self.queue.pop(0)
        study = self.study(run.point)
        if number is None:
            # A sampler seeded by the run itself: the suggestion depends on the study's history
            # and the run, not on how many suggestions this process made before (a resume asks
            # what an uninterrupted sweep would have asked).
            study.sampler = make_sampler(self.sampler_name, self._sampler_seed(run))
            trial = study.ask(self.distributions)
            trial.set_user_attr("sample", run.sample)
            trial.set_user_attr("run_id", run.run_id)
            number, params = trial.number, trial.params
            self.reported[trial_id] = set()
        else:
            frozen = self.storage().get_trial(self._storage_id(run, number))
            params = frozen.params
            self.reported[trial_id] = set(frozen.intermediate_values)
        self.storage().set_trial_user_attr(self._storage_id(run, number), "tune_trial_id",
                                           trial_id)
        self.trials[trial_id] = (run, number)
        config = self.space.trial_config(self.points[run.point], params, seed=self.seed)
        config.update({f"{META_PREFIX}point": self.keys[run.point],
                       f"{META_PREFIX}study": self.study_name(run.point),
                       f"{META_PREFIX}optuna_trial": number,
                       f"{META_PREFIX}run": run.run_id,
                       f"{META_PREFIX}sample": run.sample})
        return config

    def _sampler_seed(self, run: Run) -> int:
        if self.sampler_name == "qmc":  # one scrambled sequence per study: the point's seed
            return _point_seed(self.seed, self.keys[run.point])
        return _point_seed(self.seed, f"{self.keys[run.point]}/{run.sample}")

    def report(self, trial_id: str, step: int, value: float) -> bool:
        """Report epoch ``step``'s metric to the trial's study; True when it should be pruned.

        A step Optuna already holds (a retried or resumed trial repeats its epochs) is not
        reported again; the pruner is asked only from the trial's latest step on, so a rerun
        prunes where the first run would have.
        """
        if trial_id not in self.trials or self.halted or not math.isfinite(value):
            return False
        if trial_id in self.pruned:
            return True
        if trial_id not in self.reported:
            return False  # told already (its row is written): a late retry reports nothing
        run, number = self.trials[trial_id]
        seen = self.reported[trial_id]
        trial = optuna.Trial(self.study(run.point), self._storage_id(run, number))
        if step not in seen:
            trial.report(value, step)
            seen.add(step)
        if step >= max(seen) and trial.should_prune():
            self.pruned.add(trial_id)
        return trial_id in self.pruned

    def is_pruned(self, trial_id: str) -> bool:
        return trial_id in self.pruned

    def run_of(self, trial_id: str) -> Run | None:
        entry = self.trials.get(trial_id)
        return entry[0] if entry else None

    def on_trial_complete(self, trial_id: str, result: Mapping[str, Any] | None = None,
                          error: bool = False) -> None:
        """Tune's hook, called *before* the callbacks: nothing is told here (see :meth:`finish`).
        A trial removed before it ran, or stopped without a record, stays RUNNING in its study
        and is run again by the next ``--resume``."""

    def finish(self, trial_id: str, status: str, objective: float | None) -> None:
        """Tell the run's Optuna trial its outcome; called once its row is written."""
        run, number = self.trials[trial_id]
        self._tell(run, number, status, objective)
        self.reported.pop(trial_id, None)

    def _tell(self, run: Run, number: int, status: str, objective: Any) -> None:
        if status == "pruned":
            state, values = TrialState.PRUNED, None
        elif status == "completed" and objective is not None and math.isfinite(objective):
            state, values = TrialState.COMPLETE, float(objective)
        else:  # error, or diverged: no usable network, so never a study's best trial
            state, values = TrialState.FAIL, None
        sid = self._storage_id(run, number)
        if self.storage().get_trial(sid).state.is_finished():
            return
        self.storage().set_trial_user_attr(sid, "status", status)
        self.study(run.point).tell(number, values, state=state)

    # ----------------------------------------------------------------------------- persistence
    # Nothing of the searcher is ever restored: a resume plans from the durable record. Tune's
    # periodic save gets a JSON summary (data, never a pickle) for whoever reads its folder.
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"experiment": self.experiment, "total": self.total,
                       "queued": [r.run_id for r, _ in self.queue],
                       "running": {t: r.run_id for t, (r, _) in self.trials.items()}}, f)

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("a resume plans from the Parquet rows and the studies")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_studies"], state["_storage"] = {}, None  # reopened from the journal
        return state
