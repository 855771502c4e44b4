"""A Tune scheduler that lets the Optuna pruner of the trial's own study decide, in the driver.

Tune calls ``scheduler.on_trial_result`` on every reported result, before the searcher hears of
it. For each training epoch this scheduler passes the epoch's metric to
:meth:`pipeline.orchestration.searcher.PointStudySearcher.report`, which reports it to the Optuna trial
and asks
that study's pruner. A ``True`` answer returns ``STOP``: Tune stops the trial at once (its
``tune.report`` call never returns), the searcher tells Optuna ``PRUNED``, and the Parquet writer
records status ``pruned``.

The scheduler holds no state of its own: the searcher keeps it and is saved and restored with the
experiment, and both are pickled together in the Tuner's state, so this reference survives
``Tuner.restore``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from pipeline.orchestration.searcher import PointStudySearcher

__all__ = ["OptunaPruningScheduler"]


class OptunaPruningScheduler(FIFOScheduler):
    """FIFO scheduling; prunes on each ``phase == "train"`` result's metric.

    Args:
        searcher: the searcher that owns the Optuna studies.
    """

    def __init__(self, searcher: PointStudySearcher) -> None:
        super().__init__()
        self.searcher = searcher
        self.stopped = 0

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        if result.get("phase") != "train":
            return TrialScheduler.CONTINUE
        value, step = result.get(self.searcher.space.metric), result.get("step")
        if value is None or step is None or not math.isfinite(float(value)):
            return TrialScheduler.CONTINUE  # a NaN ends the trial itself, as diverged
        if self.searcher.report(trial.trial_id, int(step), float(value)):
            self.stopped += 1
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"Optuna pruning per scientific point ({self.searcher.pruner_name}); " \
               f"{self.stopped} stopped"
