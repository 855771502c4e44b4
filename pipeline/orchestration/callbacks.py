"""Driver-side Tune callbacks: the Parquet writer and the concise progress display.

:class:`ResultsWriter` writes each trial to the ``trials`` and ``curves`` tables as it ends (see
:mod:`pipeline.analysis.results`). A completed, diverged or errored trial sends its whole record with its
final report. A pruned trial is stopped inside ``tune.report`` and sends nothing more, so its row is
rebuilt from the epoch results the driver saw: its config, its warm-up and training curves, its
best validation loss and epoch, where it ran, and any record-level values the objective reported
early (a report whose phase is neither ``warmup`` nor ``train``); values only known at the end (the
test loss) stay null. A trial whose process died beyond the retries gets an ``error`` row. A trial
stopped without an outcome (an interrupt) gets none: its run is still open and ``--resume`` runs
it again. Rows are named by the run's stable id (``p<point>-s<sample>``), so a rewrite replaces.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from ray import tune

from pipeline.analysis.results import Store, duration, record_rows
from pipeline.core.config import TrialConfig
from pipeline.orchestration.trainable import CURVE_KEYS, META_PREFIX

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from pipeline.orchestration.searcher import PointStudySearcher

__all__ = ["Halt", "Progress", "ResultsWriter", "TensorBoardWriter", "outcome"]

_PLACEMENT = ("host", "node_id", "gpu_name", "threads", "cpu_model", "cuda_version", "cudnn_version")
logger = logging.getLogger("ray.tune.warmup_sweep")


def outcome(trial: Trial, *, error: bool = False, pruned: bool = False) -> str | None:
    """The status of an ended trial: its record's status (once its final report arrived),
    ``pruned`` (stopped by the pruner
    before its final report), ``error`` (the process died beyond the retries), or None: stopped
    without an outcome (an interrupt, or a halt after a failed write), so not recorded; the run
    stays open in its study and the next ``--resume`` runs it again."""
    result = trial.last_result or {}
    if result.get("phase") == "final":  # the record arrived: that is the outcome, even if the
        return str(result.get("status"))  # process died right after sending it
    if error:
        return "error"
    return "pruned" if pruned else None


def _error_text(trial: Trial) -> str:
    text = (trial.get_error() or "").strip().splitlines()
    last = next((line for line in reversed(text) if line.strip()), "the trial's process failed")
    return last[:500]


def _whole_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every config key of a trial, defaults included (a row carries its whole config, whether
    the objective echoed it or not)."""
    flat = {k: v for k, v in config.items() if not k.startswith(META_PREFIX)}
    try:
        return {**TrialConfig.from_dict(flat).to_dict(), **flat}
    except ValueError:  # a config the objective refused: keep what was given
        return dict(flat)


class Halt(tune.Stopper):
    """Stops the whole experiment once :attr:`reason` is set (a write of the record failed)."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.reason is not None

    def stop_all(self) -> bool:
        return self.reason is not None


class ResultsWriter(tune.Callback):
    """Writes each ended run's rows (one file per run per table), then tells its Optuna trial.

    The order is the record's guarantee: a told Optuna trial always has its row. When a write
    fails (a full disk, permissions, an unreachable bucket) nothing is told, the searcher hands
    out no more runs and :attr:`halt` stops the experiment; :attr:`failure` says why, and the
    next ``--resume`` runs exactly the runs without a row.

    Args:
        results: the results root (a folder or a URI).
        space: the search-space name.
        experiment: the experiment name.
        provenance: columns added to every trials row (git SHA, package versions).
        searcher: the experiment's searcher (told after each write).
        halt: the experiment's stopper.
    """

    def __init__(self, results: str, space: str, experiment: str,
                 provenance: Mapping[str, Any], searcher: PointStudySearcher,
                 halt: Halt) -> None:
        self.results, self.space, self.experiment = results, space, experiment
        self.provenance = dict(provenance)
        self.searcher, self.halt = searcher, halt
        self.started: dict[str, datetime] = {}
        self.retries: dict[str, int] = {}
        self.written: set[str] = set()
        self.failure: str | None = None
        self._partial: dict[str, dict[str, Any]] = {}

    @property
    def store(self) -> Store:
        return Store(self.results, self.space, self.experiment)

    # ----------------------------------------------------------------------------- Tune hooks
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                       ) -> None:
        self.started.setdefault(trial.trial_id, datetime.now(UTC))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        if result.get("phase") != "train":
            return
        part = self._partial.setdefault(trial.trial_id, {"warmup": [], "train": {}})
        if "warmup_curve" in result:
            part["warmup"] = json.loads(result["warmup_curve"])
            part.update({k: result.get(k) for k in _PLACEMENT})
        if "summary_json" in result:
            part.setdefault("summary", {}).update(json.loads(result["summary_json"]))
        part["train"][int(result["step"])] = {k: result.get(k) for k in CURVE_KEYS}

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                         ) -> None:
        self.retries[trial.trial_id] = self.retries.get(trial.trial_id, 0) + 1
        self._partial.pop(trial.trial_id, None)  # the retry starts from scratch

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                          ) -> None:
        self._record(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                       ) -> None:
        self._record(trial, error=True)

    def _record(self, trial: Trial, *, error: bool) -> None:
        """Write the run's rows, then tell Optuna. A failure halts the experiment instead of
        raising (Tune would count it against the trial and run it again)."""
        tid = trial.trial_id
        if tid in self.written or self.failure is not None \
                or self.searcher.run_of(tid) is None:
            return
        status = outcome(trial, error=error, pruned=self.searcher.is_pruned(tid))
        if status is None:
            return
        try:
            objective = self._write(trial, status, error=error)
            self.written.add(tid)
            self.searcher.finish(tid, status, objective)
        except Exception as exc:  # noqa: BLE001 - disk full, permissions, an unreachable bucket
            logger.warning("could not record trial %s", tid, exc_info=True)  # to the log file
            run = self.searcher.run_of(tid)
            self.failure = (f"could not record run {run.run_id if run else tid}: "
                            f"{type(exc).__name__}: {exc}".splitlines()[0])
            self.searcher.halted = True
            self.halt.reason = self.failure

    # ----------------------------------------------------------------------------- rows
    def _write(self, trial: Trial, status: str, *, error: bool) -> float | None:
        tid = trial.trial_id
        run = self.searcher.run_of(tid)
        partial = self._partial.pop(tid, None) or {"warmup": [], "train": {}}
        result = trial.last_result or {}
        if result.get("phase") == "final" and result.get("record_json"):
            record = {**_whole_config(trial.config), **json.loads(result["record_json"])}
        else:
            record = self._rebuild(trial.config, partial, status)
            if error:
                record["error"] = _error_text(trial)
        if record.get("task.pad") is None:  # the row says the padding that ran
            with contextlib.suppress(ValueError, KeyError):
                record["task.pad"] = TrialConfig.from_dict(_whole_config(trial.config)).pad
        objective = result.get("objective") if status == "completed" else None
        meta = {"status": status,  # the row says what Optuna is told
                "point": trial.config.get(f"{META_PREFIX}point"),
                "study": trial.config.get(f"{META_PREFIX}study"),
                "optuna_trial": trial.config.get(f"{META_PREFIX}optuna_trial"),
                "sample": trial.config.get(f"{META_PREFIX}sample"),
                "tune_trial_id": tid, "objective": objective,
                "retries": max(trial.num_failures, self.retries.get(tid, 0)),
                "started_at": self.started.get(tid), "finished_at": datetime.now(UTC),
                **self.provenance}
        rows, curves = record_rows(record, **meta)
        self.store.write_trial(run.run_id, rows, curves)
        return objective

    @staticmethod
    def _rebuild(config: Mapping[str, Any], partial: Mapping[str, Any], status: str
                 ) -> dict[str, Any]:
        """A record from the epoch results seen by the driver (pruned or failed trials), with
        the trial's whole config (every key, defaults included, as a completed record has)."""
        train = [partial["train"][s] for s in sorted(partial["train"])]
        finite = [r for r in train if r.get("valid_loss") is not None
                  and math.isfinite(r["valid_loss"])]
        best = min(finite, key=lambda r: r["valid_loss"]) if finite else None
        record = _whole_config(config)
        record.update(partial.get("summary", {}))
        record.update(status=status, epochs_run=train[-1]["step"] if train else 0,
                      warmup_steps_run=len(partial["warmup"]),
                      best_valid_loss=best["valid_loss"] if best else None,
                      best_epoch=best["step"] if best else None,
                      curves=[*partial["warmup"], *train],
                      **{k: partial.get(k) for k in _PLACEMENT})
        return record


class TensorBoardWriter(tune.Callback):
    """The same curves as TensorBoard event files, one folder per run, written as results arrive
    (``tensorboard --logdir results/<space>/tensorboard/<experiment>``). A view, not the record:
    a run that starts again (a retry, a resume) starts its folder afresh.

    Scalars: ``warmup/loss`` and ``warmup/vaa_star`` by warm-up step; ``train/loss``,
    ``valid/loss``, ``valid/accuracy`` and ``vaa`` by epoch.

    Args:
        folder: the experiment's TensorBoard folder (local).
    """

    SCALARS = {"train_loss": "train/loss", "valid_loss": "valid/loss",
               "valid_accuracy": "valid/accuracy", "vaa": "vaa"}

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._writers: dict[str, Any] = {}
        self.failed: str | None = None  # a view: a failure turns it off, never stops the sweep

    def _guard(self, hook: Callable[[], None]) -> None:
        if self.failed is not None:
            return
        try:
            hook()
        except Exception as exc:  # noqa: BLE001 - a full disk, permissions
            self.failed = f"{type(exc).__name__}: {exc}"
            logger.warning("TensorBoard files turned off: %s", self.failed)

    def _writer(self, trial: Trial, *, fresh: bool = False) -> Any:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        tid = trial.trial_id
        if fresh and tid in self._writers:
            self._writers.pop(tid).close()
        if tid not in self._writers:
            run = str(trial.config.get(f"{META_PREFIX}run", tid))
            path = os.path.join(self.folder, run)
            if fresh:
                shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path, exist_ok=True)
            self._writers[tid] = EventFileWriter(path, flush_secs=5)
        return self._writers[tid]

    def _scalar(self, trial: Trial, tag: str, value: Any, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        if value is None or not math.isfinite(float(value)):
            return
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])
        self._writer(trial).add_event(Event(wall_time=time.time(), step=int(step),
                                            summary=summary))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                       ) -> None:
        self._guard(lambda: self._writer(trial, fresh=True))

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                         ) -> None:
        self._guard(lambda: self._writer(trial, fresh=True))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        self._guard(lambda: self._result(trial, result))

    def _result(self, trial: Trial, result: dict[str, Any]) -> None:
        if result.get("phase") != "train":
            return
        if "warmup_curve" in result:
            for row in json.loads(result["warmup_curve"]):
                self._scalar(trial, "warmup/loss", row.get("train_loss"), row.get("step", 0))
                self._scalar(trial, "warmup/vaa_star", row.get("vaa_star"), row.get("step", 0))
        for key, tag in self.SCALARS.items():
            self._scalar(trial, tag, result.get(key), result.get("step", 0))

    def _close(self, trial: Trial) -> None:
        writer = self._writers.pop(trial.trial_id, None)
        if writer is not None:
            writer.close()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                          ) -> None:
        self._guard(lambda: self._close(trial))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                       ) -> None:
        self._guard(lambda: self._close(trial))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for writer in self._writers.values():
            with contextlib.suppress(Exception):
                writer.close()
        self._writers.clear()


class Progress(tune.Callback):
    """What a sweep shows while it runs: one line per recorded trial and a live view of the whole.

    The view: runs done (by status) / running / pending, each running trial's epoch of its total,
    the elapsed time, an ETA from the measured epoch times, and the best validation loss so far
    per cell. On a terminal it is a ``tqdm`` bar redrawn in place (at most twice a second); when
    stdout is not a terminal (a log, CI, a cluster job) it is a plain line every ``every_s``
    seconds.

    Args:
        total: runs in the experiment.
        nuisance: nuisance keys shown on each line.
        metric: the metric's name; the line shows ``best_<metric>``.
        epochs: training epochs per trial (for "epoch k/N" and the ETA).
        done: runs already recorded before this session (a resumed experiment).
        writer: the Parquet writer; only the trials it recorded get a line.
        every_s: seconds between plain lines (not on a terminal).
        out: where to print (stdout).
        live: force the terminal view on or off (default: whether ``out`` is a terminal).
    """

    def __init__(self, total: int, nuisance: Sequence[str], metric: str, *, epochs: int = 0,
                 done: int = 0, every_s: float = 60.0, out: TextIO | None = None,
                 writer: ResultsWriter | None = None, live: bool | None = None,
                 counts: Mapping[str, int] | None = None, at_once: int | None = None) -> None:
        self.total, self.nuisance, self.metric, self.epochs = total, list(nuisance), metric, epochs
        self.writer = writer
        self.done, self.every_s, self.out = done, every_s, out
        self.counts: dict[str, int] = dict(counts or {})  # a resume starts from the record's
        self.at_once = at_once  # trials at once (--max-concurrent), else the most seen running
        self._peak = 1
        self.running: dict[str, dict[str, Any]] = {}  # Tune trial id -> run, cell, epoch, times
        self.best: dict[str, float] = {}              # cell -> best validation loss so far
        self.epoch_s: list[float] = []                # measured epoch durations
        self._t0 = self._last = self._drawn = time.monotonic()
        stream = self.out or sys.stdout
        self.live = bool(getattr(stream, "isatty", lambda: False)()) if live is None else live
        self._bar: Any = None

    def setup(self, **info: Any) -> None:
        self._t0 = self._last = time.monotonic()

    def get_state(self) -> dict[str, Any]:
        return {"done": self.done, "counts": self.counts}

    def set_state(self, state: dict[str, Any]) -> None:
        self.done, self.counts = state["done"], state["counts"]

    # ----------------------------------------------------------------------------- output
    def _print(self, line: str) -> None:
        try:
            if self._bar is not None:
                self._bar.write(line, file=self.out or sys.stdout)
            else:
                print(line, file=self.out or sys.stdout, flush=True)
        except OSError:  # a closed pipe (`| head`) must not fail the trial being reported
            pass

    def _draw(self, *, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._drawn < 0.5:
            return
        self._drawn = now
        try:
            if self._bar is None:
                from tqdm import tqdm
                # The size is given: a terminal that reports none (0 x 0: a fresh pty, some CI
                # runners) would make tqdm hide its only bar.
                size = shutil.get_terminal_size(fallback=(160, 24))
                self._bar = tqdm(total=self.total, initial=self.done, unit="run",
                                 file=self.out or sys.stdout, ncols=max(size.columns, 80),
                                 nrows=max(size.lines, 4),
                                 bar_format="{n_fmt}/{total_fmt} runs |{bar:20}| {desc}")
            self._bar.n = self.done
            self._bar.set_description_str(self.view(), refresh=True)
        except OSError:
            pass

    def close(self) -> None:
        if self._bar is not None:
            with contextlib.suppress(OSError):
                self._bar.close()
            self._bar = None

    # ----------------------------------------------------------------------------- Tune hooks
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                       ) -> None:
        self.running[trial.trial_id] = {
            "run": trial.config.get(f"{META_PREFIX}run", trial.trial_id),
            "cell": trial.config.get("model.cell", "?"), "epoch": 0, "at": time.monotonic()}
        self._peak = max(self._peak, len(self.running))
        self._draw()

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                         ) -> None:
        state = self.running.get(trial.trial_id)
        if state is not None:  # the retry starts from epoch 0: no epoch time spans the restart
            state.update(epoch=0, at=time.monotonic())

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        if result.get("phase") != "train":
            return
        state = self.running.setdefault(trial.trial_id, {
            "run": trial.config.get(f"{META_PREFIX}run", trial.trial_id),
            "cell": trial.config.get("model.cell", "?"), "epoch": 0, "at": time.monotonic()})
        now = time.monotonic()
        step = int(result.get("step") or 0)
        if step > state["epoch"]:
            if state["epoch"] > 0:  # the first epoch also holds the warm-up and the set-up
                self.epoch_s.append((now - state["at"]) / (step - state["epoch"]))
            state.update(epoch=step, at=now)
        value = result.get(self.metric)
        if value is not None and math.isfinite(float(value)):
            cell = str(state["cell"])
            self.best[cell] = min(self.best.get(cell, math.inf), float(value))
        self._draw()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                          ) -> None:
        self._line(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
                       ) -> None:
        self._line(trial, error=True)

    def _line(self, trial: Trial, *, error: bool) -> None:
        self.running.pop(trial.trial_id, None)
        result = trial.last_result or {}
        if self.writer is not None and trial.trial_id not in self.writer.written:
            self._draw()
            return  # not recorded (interrupted, or a failed write): no line, not counted
        status = outcome(trial, error=error, pruned=self.writer is not None
                         and self.writer.searcher.is_pruned(trial.trial_id))
        if status is None:
            return
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        if status == "completed":
            label, value = f"best_{self.metric}", result.get("objective")
        elif status == "pruned":
            label, value = f"{self.metric}@{result.get('step')}", result.get(self.metric)
        else:  # diverged or error
            label, value = "epochs", result.get("epochs_run")
        shown = "-" if value is None else f"{value:.4g}"
        nuis = " ".join(f"{k}={trial.config.get(k):.3g}" if isinstance(trial.config.get(k), float)
                        else f"{k}={trial.config.get(k)}" for k in self.nuisance)
        retried = f" retried={trial.num_failures}" if trial.num_failures else ""
        run = trial.config.get(f"{META_PREFIX}run", "")
        self._print(f"[{self.done}/{self.total}] {status:<9} {label}={shown}  {run} "
                    f"{trial.config.get(META_PREFIX + 'point')} {nuis}{retried}")
        self._draw(force=True)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if self.live:
            self._draw()
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._print(self.summary())

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.close()

    # ----------------------------------------------------------------------------- the view
    def eta_s(self) -> float | None:
        """Seconds left: the epochs still to run (running trials' rest, then every pending run in
        full; pruning only shortens it) x the mean measured epoch time / the trials at once."""
        if not self.epoch_s or not self.epochs:
            return None
        per_epoch = sum(self.epoch_s[-200:]) / len(self.epoch_s[-200:])
        pending = max(0, self.total - self.done - len(self.running))
        left = sum(max(0, self.epochs - r["epoch"]) for r in self.running.values())
        left += pending * self.epochs
        return left * per_epoch / max(1, self.at_once or self._peak)

    def view(self) -> str:
        """The live view as one line (see the class docstring)."""
        counts = " ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "none yet"
        pending = max(0, self.total - self.done - len(self.running))
        of = f"/{self.epochs}" if self.epochs else ""
        running = ", ".join(f"{r['run']} {r['epoch']}{of}" for r in
                            sorted(self.running.values(), key=lambda r: str(r["run"]))[:4])
        more = "..." if len(self.running) > 4 else ""
        eta = self.eta_s()
        best = " ".join(f"{c} {v:.3g}" for c, v in sorted(self.best.items()))
        parts = [f"done: {counts}", f"running {len(self.running)}"
                 + (f" ({running}{more})" if running else ""), f"pending {pending}",
                 f"elapsed {duration(time.monotonic() - self._t0)}",
                 f"ETA {duration(eta) if eta is not None else '?'}"]
        if best:
            parts.append(f"best {self.metric}: {best}")
        return " | ".join(parts)

    def summary(self) -> str:
        """The plain periodic line."""
        return f"-- {self.done}/{self.total} runs | {self.view()}"
