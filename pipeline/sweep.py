"""Run a named sweep: ``python -m pipeline.sweep --space copy_task [--smoke]``.

Ray Tune runs the trials (an embedded local Ray, or a cluster through ``--address``/``RAY_ADDRESS``),
one Optuna study per scientific point samples the nuisance parameters and prunes on each epoch's
validation loss (:mod:`pipeline.orchestration.searcher`, :mod:`pipeline.orchestration.scheduler`),
and the driver writes every trial to Parquet as it ends (:mod:`pipeline.orchestration.callbacks`,
:mod:`pipeline.analysis.results`).

Bad input (an unknown space, key or value, an unreachable ``--address``, an unwritable results
folder, a corrupt results file) prints one line on stderr and exits 2 before anything is written.
``--resume EXPERIMENT`` finishes an interrupted experiment (Ctrl-C or kill -9 of this driver)
without rerunning or duplicating the trials already recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import ray
from ray import tune

import search_spaces
from pipeline.analysis.results import ResultsError, Store, provenance
from pipeline.core.config import MNIST_TASKS, TrialConfig, parse_sets
from pipeline.orchestration.callbacks import Progress, ResultsWriter
from pipeline.orchestration.scheduler import OptunaPruningScheduler
from pipeline.orchestration.searcher import PointStudySearcher, check_journal, make_sampler
from pipeline.orchestration.session import BadInput, check_resources, connect, quiet_logs
from pipeline.orchestration.trainable import make_trainable
from search_spaces.space import SearchSpace, estimate_core_hours, point_key

__all__ = ["main"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise BadInput(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m pipeline.sweep", description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--space", help="search space name (see --list-spaces) or module:attribute")
    a("--experiment", help="experiment name (default: SPACE-YYYYmmdd-HHMMSS)")
    a("--num-samples", type=int, help="trials (nuisance samples) per scientific point")
    a("--max-concurrent", type=int, help="at most this many trials at once (default: resources)")
    a("--cpus-per-trial", type=float, default=1.0, help="CPU share per trial = its torch threads")
    a("--gpus-per-trial", type=float, default=0.0,
      help="GPU share per trial (0.25 packs four); only requested when the cluster has GPUs")
    a("--address", default=os.environ.get("RAY_ADDRESS"),
      help="Ray cluster to join (default $RAY_ADDRESS; none: start a local Ray)")
    a("--storage", help="Tune state folder or URI, shared by all nodes on a cluster "
                        "(default RESULTS/SPACE/tune)")
    a("--results", default="results", help="results root, a folder or a URI (default ./results)")
    a("--journal", help="Optuna journal file (default RESULTS/SPACE/optuna.journal)")
    a("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
      help="pin a config key: a scientific key to one value, a nuisance key untuned")
    a("--seed", type=int, default=0, help="seeds the samplers and the trials (default 0)")
    a("--sampler", default="tpe", choices=("tpe", "random", "qmc"))
    a("--pruner", default="median", choices=("median", "halving", "hyperband", "none"))
    a("--max-failures", type=int, default=2, help="retries of a trial whose process died")
    a("--smoke", action="store_true", help="a tiny sweep: minutes on 2 CPU cores")
    a("--dry-run", action="store_true", help="print the grid, trial count and cost; run nothing")
    a("--list-spaces", action="store_true", help="list the search spaces and exit")
    a("--resume", metavar="EXPERIMENT", help="finish an interrupted experiment of --space")
    a("--verbose", action="store_true", help="show Tune's own tables and Ray's log output")
    return p


# --------------------------------------------------------------------------------------- planning
def plan_space(args: argparse.Namespace) -> SearchSpace:
    """The space after --smoke, --set and --num-samples, validated (BadInput on any error)."""
    try:
        space = search_spaces.get(args.space)
        if args.smoke:
            space = space.smoke_version()
        space = space.with_sets(parse_sets(args.sets))
        if args.max_concurrent is not None and args.max_concurrent < 1:
            raise ValueError(f"--max-concurrent must be >= 1 but got {args.max_concurrent}")
        if args.num_samples is not None:
            if args.num_samples < 1:
                raise ValueError(f"--num-samples must be >= 1 but got {args.num_samples}")
            space = dataclasses.replace(space, samples_per_point=args.num_samples)
        space.validate(seed=args.seed)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return space


def epochs_of(space: SearchSpace) -> int:
    return max(TrialConfig.from_dict(c).train.epochs for c in space.example_configs())


def print_plan(space: SearchSpace, args: argparse.Namespace) -> None:
    """The --dry-run output: the scientific grid, the trial count and an estimated cost."""
    points = space.points()
    keys = list(space.scientific)
    widths = [max(len(k), *(len(str(p[k])) for p in points)) for k in keys]
    print(f"space {space.name}{' (smoke)' if args.smoke else ''}: {len(points)} scientific points "
          f"x {space.samples_per_point} samples = {len(points) * space.samples_per_point} trials, "
          f"{space.seeds} seed(s) per trial")
    print("  " + "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for p in points:
        print("  " + "  ".join(str(p[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))
    for key, dist in space.nuisance.items():
        print(f"nuisance {key} ~ {dist} (one {args.sampler} study per point, {args.pruner} pruner)")
    print("fixed " + " ".join(f"{k}={v}" for k, v in space.fixed.items()))
    hours = estimate_core_hours(space)
    cores = os.cpu_count() or 1
    print(f"estimated cost: about {hours:.3g} CPU core-hours without pruning, about "
          f"{hours / cores:.3g} h on this machine's {cores} cores (a rough model: "
          f"search_spaces.space.trial_core_seconds)")


def trial_name(trial: Any) -> str:
    """Tune trial names and folders: the trial id (config values make names too long)."""
    return str(trial.trial_id)


def _can_restore(path: str) -> bool:
    try:
        return tune.Tuner.can_restore(path)
    except Exception:  # noqa: BLE001 - an unreachable or malformed URI: nothing to restore
        return False


def _done(store: Store) -> dict[str, dict[str, Any]]:
    """Trial id -> final summary of the trials already in Parquet (never run again)."""
    rows = store.read("trials").drop_duplicates("trial_id")
    return {str(r.trial_id): {"status": r.status,
                              "objective": None if r.objective != r.objective else r.objective}
            for r in rows.itertuples()}


def fit(space: SearchSpace, args: argparse.Namespace, exp: str, store: Store,
        settings: dict[str, Any], *, resume: bool) -> None:
    """Build (or restore) the Tuner and run it to the end or to an interrupt."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # Parquet is the record
    definition = settings["definition"]
    trainable = make_trainable(objective=definition["objective"], metric=definition["metric"],
                               done=_done(store), cpus=settings["cpus_per_trial"],
                               gpus=settings["gpus_per_trial"])
    path = f"{settings['storage']}/{exp}"
    if resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        searcher = PointStudySearcher(space, experiment=exp, journal=settings["journal"],
                                      sampler=settings["sampler"], pruner=settings["pruner"],
                                      seed=settings["seed"], epochs=epochs_of(space))
        callbacks = [ResultsWriter(settings["results"], space.name, exp, provenance()),
                     Progress(searcher.total, list(space.nuisance), space.metric)]
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=OptunaPruningScheduler(searcher),
                num_samples=searcher.total, max_concurrent_trials=settings["max_concurrent"],
                reuse_actors=True, trial_name_creator=trial_name,
                trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name=exp, storage_path=settings["storage"], callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=settings["max_failures"]),
                verbose=2 if args.verbose else 0, log_to_file=True))
    quiet = {} if args.verbose else {"RAY_AIR_NEW_OUTPUT": "0"}  # the legacy output obeys verbose=0
    saved = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    try:
        tuner.fit()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------------------- running
def _experiment_name(args: argparse.Namespace, space: SearchSpace) -> str:
    name = args.resume or args.experiment or \
        f"{space.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    if not _NAME.match(name) or "=" in name:
        raise BadInput(f"experiment name {name!r} must be letters, digits, '.', '_' or '-'")
    return name


def _check_data(space: SearchSpace) -> None:
    configs = [TrialConfig.from_dict(c) for c in space.example_configs()]
    dirs = {c.task.data_dir for c in configs if c.task.name in MNIST_TASKS}
    if dirs:
        from pipeline.core.tasks import load_mnist  # torch: only for MNIST spaces
        for d in sorted(dirs, key=str):
            try:
                load_mnist(d)
            except (FileNotFoundError, ValueError) as exc:
                raise BadInput(str(exc).splitlines()[0]) from None


def run(args: argparse.Namespace, space: SearchSpace) -> int:
    """Validate the environment, then run (or resume) the experiment. Returns the exit status."""
    exp = _experiment_name(args, space)
    try:
        store = Store(args.results, space.name, exp)
        store.check_writable()
        store.check_readable()
        settings = store.read_json(store.experiment_json) if args.resume else None
    except FileNotFoundError:
        raise BadInput(f"no experiment {exp!r} of space {space.name!r} under {args.results}; "
                       f"nothing to resume") from None
    except ResultsError as exc:
        raise BadInput(str(exc)) from None
    if settings is None and store.exists(store.experiment_json):
        raise BadInput(f"experiment {exp!r} already exists under {args.results}/{space.name}; "
                       f"use --resume {exp} to finish it, or another --experiment")
    storage = settings["storage"] if settings else (args.storage or f"{store.base}/tune")
    if "://" not in storage:
        storage = os.path.abspath(storage)  # Tune needs an absolute local path
    if settings:
        journal = settings["journal"]
    elif args.journal or store.is_local:
        journal = os.path.abspath(args.journal or f"{store.base}/optuna.journal")
    else:
        raise BadInput("--journal PATH is needed when --results is a URI: the Optuna journal is "
                       "a local file on the driver")
    try:
        check_journal(journal)
        make_sampler(args.sampler, 0)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if settings is None:
        _check_data(space)
    if settings and not _can_restore(f"{storage}/{exp}"):
        raise BadInput(f"no Tune state at {storage}/{exp}; cannot resume {exp!r}")

    started_ray = connect(args.address, verbose=args.verbose)
    log_file = None
    try:
        asked = (settings["cpus_per_trial"], settings["gpus_per_trial"]) if settings else (
            args.cpus_per_trial, args.gpus_per_trial)
        cpus, gpus = check_resources(*asked)
        if not args.verbose:
            log_file = quiet_logs(f"{store.base}/experiments/{exp}.log" if store.is_local else None)
        if settings is None:
            settings = _settings(args, space, exp, store, storage, journal, cpus, gpus)
            store.write_json(store.experiment_json, settings)
            _say(f"experiment {exp}: {settings['trials']} trials "
                 f"({settings['points']} points x {space.samples_per_point}); "
                 f"results in {store.base}")
        else:
            _say(f"resuming {exp}: {len(store.trial_ids())}/{settings['trials']} trials recorded")
        t0 = time.monotonic()
        fit(space, args, exp, store, settings, resume=bool(args.resume))
        recorded = len(store.trial_ids())
        if recorded >= settings["trials"]:
            store.compact()
            settings = {**settings, "finished_at": datetime.now(UTC).isoformat(),
                        "wall_s": round(time.monotonic() - t0, 1)}
            store.write_json(store.experiment_json, settings)
            rows = store.read("trials").drop_duplicates("trial_id")
            counts = ", ".join(f"{n} {s}" for s, n in rows["status"].value_counts().items())
            _say(f"done: {recorded} trials ({counts}) in {time.monotonic() - t0:.0f}s; load them "
                 f"with pd.read_parquet({store.base + '/trials'!r})")
            return 0
        print(f"stopped with {recorded}/{settings['trials']} trials recorded; finish with: "
              f"python -m pipeline.sweep --space {args.space} --results {args.results} "
              f"--resume {exp}", file=sys.stderr, flush=True)
        return 1
    finally:
        if log_file is not None:
            logging.getLogger("ray").removeHandler(log_file)
            log_file.close()
        if started_ray:
            ray.shutdown()


def _say(line: str) -> None:
    """Print a progress line; a closed stdout (``| head``) is not an error of the sweep."""
    try:
        print(line, flush=True)
    except OSError:
        pass


def _settings(args: argparse.Namespace, space: SearchSpace, exp: str, store: Store, storage: str,
              journal: str, cpus: float, gpus: float) -> dict[str, Any]:
    """The experiment.json content: command, resolved settings, space, seed, versions."""
    points = space.points()
    return {"experiment": exp, "space": space.name, "argv": sys.argv,
            "command": " ".join(["python -m pipeline.sweep", *(sys.argv[1:] if args.argv is None
                                                                else args.argv)]),
            "created_at": datetime.now(UTC).isoformat(), "seed": args.seed,
            "smoke": args.smoke, "sets": args.sets, "sampler": args.sampler,
            "pruner": args.pruner, "cpus_per_trial": cpus, "gpus_per_trial": gpus,
            "max_concurrent": args.max_concurrent, "max_failures": args.max_failures,
            "results": store.root, "storage": storage, "journal": journal,
            "points": len(points), "trials": len(points) * space.samples_per_point,
            "studies": [f"{exp}/{point_key(p)}" for p in points],
            "definition": space.describe(), **provenance()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 1 when the sweep stopped early, 2 on bad input."""
    try:
        args = build_parser().parse_args(argv)
        args.argv = None if argv is None else list(argv)
        if args.list_spaces:
            for name in search_spaces.names():
                space = search_spaces.get(name)
                print(f"{name:<12} {len(space.points()):>4} points  {space.description}")
            return 0
        if not args.space:
            raise BadInput("--space is required (see --list-spaces)")
        if args.resume:  # the experiment's own definition is restored with it
            try:
                space = search_spaces.get(args.space)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            return run(args, space)
        space = plan_space(args)
        if args.dry_run:
            print_plan(space, args)
            return 0
        return run(args, space)
    except BadInput as exc:
        print(f"sweep: error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
