"""Run a named sweep: ``python -m pipeline.sweep --space copy_task [--smoke]``.

Ray Tune runs the trials (an embedded local Ray, or a cluster through ``--address``/``RAY_ADDRESS``),
one Optuna study per scientific point samples the nuisance parameters and prunes on each epoch's
validation loss (:mod:`pipeline.orchestration.searcher`, :mod:`pipeline.orchestration.scheduler`),
and the driver writes every trial to Parquet as it ends (:mod:`pipeline.orchestration.callbacks`,
:mod:`pipeline.analysis.results`).

Bad input (an unknown space, key or value, an unreachable ``--address``, an unwritable results
folder, a corrupt results file) prints one line on stderr and exits 2 before anything is written.
``--resume EXPERIMENT`` finishes an interrupted experiment (Ctrl-C or kill -9 of this driver, a
full disk): it reconciles the Parquet rows with the Optuna studies and runs exactly the runs
without a row (see :meth:`pipeline.orchestration.searcher.PointStudySearcher.plan`). One process
writes an experiment at a time (:class:`pipeline.analysis.results.ExperimentLock`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import search_spaces
from pipeline.core.config import MNIST_TASKS, TrialConfig, coerce, did_you_mean, parse_sets
from pipeline.orchestration.session import BadInput
from search_spaces.space import (
    CPU_MODEL_SOURCE,
    SearchSpace,
    estimate_core_hours,
    point_key,
    trial_memory_bytes,
)

if TYPE_CHECKING:
    from pipeline.analysis.results import Store
    from pipeline.orchestration.callbacks import Halt, Progress, ResultsWriter
    from pipeline.orchestration.searcher import PointStudySearcher

# Ray, Optuna, pandas and pyarrow are imported where they are used: --help, --list-spaces,
# --dry-run and bad input answer without them (well under a second).

__all__ = ["main"]



class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        if message.startswith("unrecognized arguments: "):
            word = message.split(": ", 1)[1].split()[0]
            options = [o for a in self._actions for o in a.option_strings]
            message += did_you_mean(word.split("=")[0], options)
        raise BadInput(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m pipeline.sweep", description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--space", help="search space name (see --list-spaces) or module:attribute")
    a("--experiment", help="experiment name (default: SPACE-YYYYmmdd-HHMMSS)")
    a("--num-samples", type=int,
      help="trials (nuisance samples) per scientific point (default: the space's)")
    a("--max-concurrent", type=int, help="at most this many trials at once (default: resources)")
    a("--cpus-per-trial", type=float, help="CPU share per trial = its torch threads (default 1)")
    a("--gpus-per-trial", type=float,
      help="GPU share per trial (0.25 packs four; default 0); only requested when the cluster "
           "has GPUs")
    a("--address", default=os.environ.get("RAY_ADDRESS"),
      help="Ray cluster to join (default $RAY_ADDRESS; none: start a local Ray)")
    a("--storage", help="Tune state folder or URI, shared by all nodes on a cluster "
                        "(default RESULTS/SPACE/tune)")
    a("--results", default="results", help="results root, a folder or a URI (default ./results)")
    a("--journal", help="Optuna journal file (default RESULTS/SPACE/optuna.journal)")
    a("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
      help="pin a config key: a scientific key to one value, a nuisance key untuned")
    a("--seed", type=int, help="seeds the samplers and the trials (default 0)")
    a("--sampler", choices=("tpe", "random", "qmc"),
      help="the per-point Optuna sampler (default tpe; TPE samples at random for its first 10 "
           "trials, so with 10 or fewer samples per point it is random search)")
    a("--pruner", choices=("median", "halving", "hyperband", "none"),
      help="the per-point Optuna pruner (default median)")
    a("--max-failures", type=int, help="retries of a trial whose process died (default 2)")
    a("--smoke", action="store_true", default=None, help="a tiny sweep: minutes on 2 CPU cores")
    a("--dry-run", action="store_true", help="print the grid, trial count and cost; run nothing")
    a("--list-spaces", action="store_true", help="list the search spaces and exit")
    a("--if-exists", choices=("refuse", "resume"), default="refuse",
      help="when --experiment already exists: refuse (default), or resume it if this command "
           "defines exactly the same experiment (a job script resubmitted after its time limit)")
    a("--resume", metavar="EXPERIMENT",
      help="finish an interrupted experiment of --space: exactly the runs without a row")
    a("--tensorboard", action="store_true",
      help="also write the curves as TensorBoard event files, one folder per run, under "
           "RESULTS/SPACE/tensorboard/EXPERIMENT (needs the tensorboard package)")
    a("--progress-every", type=float, default=60.0, metavar="SECONDS",
      help="when stdout is not a terminal, a progress line this often (default 60); on a "
           "terminal the view is redrawn in place")
    a("--verbose", action="store_true", help="show Tune's own tables and Ray's log output")
    return p


# --------------------------------------------------------------------------------------- planning
DEFAULTS: dict[str, Any] = {"seed": 0, "sampler": "tpe", "pruner": "median", "smoke": False,
                            "cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "max_failures": 2}
"""The values of options left unset (unset options are None, so a resume can tell them apart)."""

DEFINITION_OPTIONS = ("experiment", "sets", "num_samples", "smoke", "seed", "sampler", "pruner",
                      "journal", "storage")
"""Options that define an experiment: ``--resume`` takes them from ``experiment.json`` and
refuses them on its command line. Resources (``--max-concurrent``, ``--cpus-per-trial``,
``--gpus-per-trial``, ``--max-failures``, ``--address``) apply to the resumed session."""

MAX_RUNS = 1_000_000
"""Runs one experiment may plan (its plan, rows and studies are held in the driver's memory)."""

PLAN_FORMAT = "runs/1"
"""``experiment.json``'s ``plan``: runs identified by (point, sample), resumed from the record."""


def _opt(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    return DEFAULTS[name] if value is None else value


def plan_space(args: argparse.Namespace) -> SearchSpace:
    """The space after --smoke, --set and --num-samples, validated (BadInput on any error)."""
    try:
        space = search_spaces.get(args.space)
        if _opt(args, "smoke"):
            space = space.smoke_version()
        space = space.with_sets(parse_sets(args.sets))
        if args.max_concurrent is not None and args.max_concurrent < 1:
            raise ValueError(f"--max-concurrent must be >= 1 but got {args.max_concurrent}")
        if args.max_failures is not None and args.max_failures < 0:
            raise ValueError(f"--max-failures must be >= 0 (retries of a dead trial process) "
                             f"but got {args.max_failures}")
        if args.num_samples is not None:
            if args.num_samples < 1:
                raise ValueError(f"--num-samples must be >= 1 but got {args.num_samples}")
            space = dataclasses.replace(space, samples_per_point=args.num_samples)
        every = getattr(args, "progress_every", 60.0)
        if not (every > 0 and math.isfinite(every)):
            raise ValueError(f"--progress-every must be a finite number of seconds > 0 but got "
                             f"{every}")
        runs = len(space.points()) * space.samples_per_point
        if runs > MAX_RUNS:
            raise ValueError(f"{runs:,} runs ({len(space.points())} points x "
                             f"{space.samples_per_point} samples) is more than one experiment "
                             f"holds ({MAX_RUNS:,}); split the grid or lower --num-samples")
        for name in ("cpus_per_trial", "gpus_per_trial"):
            value = getattr(args, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number but got "
                                 f"{value}")
        coerce("seed", _opt(args, "seed"))
        space.validate(seed=_opt(args, "seed"), required=not args.dry_run)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return space


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_memory(space: SearchSpace, limit: int | None, where_: str) -> None:
    """Refuse a trial whose memory lower bound exceeds ``limit`` bytes (T = 1e9, H = 1e6, 1e12
    samples would fail deep inside torch as an allocation traceback, trial after trial)."""
    if limit is None:
        return
    need, where = max((trial_memory_bytes(c), point_key({k: c[k] for k in space.scientific}))
                      for c in space.example_configs())
    if need > limit:
        raise BadInput(f"one trial needs at least {need / 2**30:,.3g} GiB ({where}), more than "
                       f"{where_}'s {limit / 2**30:,.3g} GiB: lower task.seq_len, "
                       f"task.train_samples, model.hidden_size or the batch sizes")


def epochs_of(space: SearchSpace) -> int:
    return max(TrialConfig.from_dict(c).train.epochs for c in space.example_configs())


TPE_STARTUP = 10
"""Optuna's TPESampler draws its first ``n_startup_trials`` (10 by default) at random."""


def sampler_note(sampler: str, space: SearchSpace) -> str:
    """The sampler's name, and what it actually does at this budget."""
    if sampler == "tpe" and space.samples_per_point <= TPE_STARTUP:
        return (f"tpe (random search here: TPE draws its first {TPE_STARTUP} trials at random and "
                f"each point has {space.samples_per_point})")
    return sampler


def print_plan(space: SearchSpace, args: argparse.Namespace) -> None:
    """The --dry-run output: the grid's size per scientific key (the whole grid with --verbose),
    the search, the protocol, and the cost on CPUs and GPUs."""
    points = space.points()
    keys = list(space.scientific)
    smoke = _opt(args, "smoke")
    print(f"space {space.name}{' (smoke)' if smoke else ''}: {len(points)} scientific points "
          f"x {space.samples_per_point} samples = {len(points) * space.samples_per_point} "
          f"trials, {space.seeds} seed(s) per trial; protocol {space.protocol(smoke=smoke)}")
    for k in keys:
        values = {p[k] for p in points}
        try:
            values = sorted(values)
        except TypeError:  # mixed types
            values = sorted(values, key=str)
        print(f"  {k}: {', '.join(map(str, values))} ({len(values)})")
    if len(points) < len(list(itertools.product(*space.scientific.values()))):
        rules = ", ".join(f"{r.key} when {r.when_key}={r.when_value}" for r in space.inactive)
        print(f"  (inactive combinations collapsed: {rules})")
    if args.verbose:
        widths = [max(len(k), *(len(str(p[k])) for p in points)) for k in keys]
        print("  " + "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
        for p in points:
            print("  " + "  ".join(str(p[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))
    else:
        print("  (the whole grid with --verbose)")
    for key, dist in space.nuisance.items():
        print(f"nuisance {key} ~ {dist} (one {sampler_note(_opt(args, 'sampler'), space)} "
              f"study per point, {_opt(args, 'pruner')} pruner)")
    print("fixed " + " ".join(f"{k}={v}" for k, v in space.fixed.items()))
    for key, message in space.missing().items():
        print(f"to run it: --set {key}=... ({message})")
    hours = estimate_core_hours(space)
    cores = os.cpu_count() or 1
    print(f"cost without pruning: about {hours:.3g} CPU core-hours ({hours / cores:.3g} h on "
          f"this machine's {cores} cores); GPU-hours: not measured (BENCHMARKS.md has no GPU "
          f"table yet). The CPU model ({CPU_MODEL_SOURCE}) is good to a factor of a few; a "
          f"smoke run times the real thing.")


def trial_name(trial: Any) -> str:
    """Tune trial names and folders: the trial id (config values make names too long)."""
    return str(trial.trial_id)


def fit(space: SearchSpace, args: argparse.Namespace, searcher: PointStudySearcher,
        writer: ResultsWriter, halt: Halt, progress: Progress, settings: dict[str, Any],
        run_name: str, extra: Sequence[Any] = ()) -> None:
    """Run the runs the searcher has queued, in a fresh Tune experiment ``run_name``."""
    from ray import tune

    from pipeline.orchestration.scheduler import OptunaPruningScheduler
    from pipeline.orchestration.trainable import make_trainable

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # Parquet is the record
    definition = settings["definition"]
    trainable = make_trainable(objective=definition["objective"], metric=definition["metric"],
                               cpus=settings["cpus_per_trial"], gpus=settings["gpus_per_trial"])
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=OptunaPruningScheduler(searcher),
            num_samples=searcher.remaining, max_concurrent_trials=settings["max_concurrent"],
            reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=run_name, storage_path=settings["storage"],
            callbacks=[writer, progress, *extra],
            stop=halt, failure_config=tune.FailureConfig(max_failures=settings["max_failures"]),
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
    from pipeline.analysis.results import NAME

    given = args.resume if args.resume is not None else args.experiment
    name = given if given is not None else \
        f"{space.name}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    if not NAME.fullmatch(name):
        raise BadInput(f"experiment name {name!r} must be letters, digits, '.', '_' or '-' "
                       f"(starting with a letter or digit)")
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


_SETTINGS_KEYS = ("experiment", "definition", "smoke", "sets", "seed", "sampler", "pruner",
                  "journal", "storage", "results", "cpus_per_trial", "gpus_per_trial",
                  "max_concurrent", "max_failures", "trials")


def _resumed_space(args: argparse.Namespace, settings: dict[str, Any]) -> SearchSpace:
    """The experiment's own space, rebuilt from ``experiment.json`` and checked against the
    definition it recorded (a space file edited since would plan other runs)."""
    given = [f"--{n.replace('_', '-')}" for n in DEFINITION_OPTIONS
             if getattr(args, n) not in (None, [])]
    if given:
        raise BadInput(f"--resume takes the experiment's own definition from experiment.json; "
                       f"drop {', '.join(given)} (only resources apply: --max-concurrent, "
                       f"--cpus-per-trial, --gpus-per-trial, --max-failures, --address)")
    if settings.get("plan") != PLAN_FORMAT:
        raise BadInput(f"experiment {settings.get('experiment')!r} was written by an older "
                       f"version without stable run identities; it cannot be resumed exactly: "
                       f"start a new experiment")
    missing = sorted(k for k in _SETTINGS_KEYS if k not in settings)
    if missing or not isinstance(settings.get("definition"), dict):
        raise BadInput(f"corrupt results file: experiment.json of {settings.get('experiment')!r} "
                       f"lacks {', '.join(missing) or 'a definition'}")
    saved = argparse.Namespace(**{**vars(args), "smoke": settings["smoke"],
                                  "sets": settings["sets"], "seed": settings["seed"],
                                  "num_samples": settings["definition"]["samples_per_point"]})
    space = plan_space(saved)
    protocol = space.protocol(smoke=bool(settings["smoke"]))
    if settings.get("protocol") not in (None, protocol):
        raise BadInput(f"the protocol of experiment {settings['experiment']!r} changed since it "
                       f"started ({settings['protocol']} then, {protocol} now: a default of the "
                       f"code changed); resume it with the code that started it "
                       f"({settings.get('git_sha')}), or start a new experiment")
    if json.loads(json.dumps(space.describe(), default=str)) != settings["definition"]:
        raise BadInput(f"the definition of space {args.space!r} changed since experiment "
                       f"{settings['experiment']!r} started; resume it with the code that "
                       f"started it ({settings.get('git_sha')}), or start a new experiment")
    return space


def _resume_if_exists(args: argparse.Namespace, space: SearchSpace) -> argparse.Namespace | None:
    """``--if-exists resume``: the arguments of ``--resume EXPERIMENT`` when the experiment exists
    and this command defines it exactly (space, seed, sampler, pruner, smoke, sets); None when it
    does not exist yet. BadInput when it exists with another definition."""
    from pipeline.analysis.results import ResultsError, Store

    store = Store(args.results, space.name, args.experiment)
    if not store.exists(store.experiment_json):
        return None
    try:
        settings = store.read_json(store.experiment_json)
    except ResultsError as exc:
        raise BadInput(str(exc)) from None
    mine = {"definition": json.loads(json.dumps(space.describe(), default=str)),
            "seed": _opt(args, "seed"), "sampler": _opt(args, "sampler"),
            "pruner": _opt(args, "pruner"), "smoke": _opt(args, "smoke"), "sets": args.sets}
    for name in ("journal", "storage"):  # given ones must be where the experiment keeps them
        if getattr(args, name):
            given = getattr(args, name)
            mine[name] = given if "://" in given else os.path.abspath(os.path.expanduser(given))
    differ = [k for k, v in mine.items() if not isinstance(settings, dict) or settings.get(k) != v]
    if differ:
        raise BadInput(f"experiment {args.experiment!r} exists with another {', '.join(differ)}; "
                       f"--if-exists resume only continues the same experiment")
    keep = {n: None for n in DEFINITION_OPTIONS}
    return argparse.Namespace(**{**vars(args), **keep, "sets": [], "resume": args.experiment})


def _check_new(exp: str, store: Store, storage: str, journal: str) -> None:
    """A new experiment reuses nothing of an old one of the same name (rows, studies, state)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    found = store.traces()
    if os.path.exists(journal):
        storage_ = JournalStorage(JournalFileBackend(journal))
        if any(n.startswith(f"{exp}/") for n in optuna.get_all_study_names(storage_)):
            found.append(f"its studies in {journal}")
    if "://" not in storage and os.path.exists(f"{storage}/{exp}"):
        found.append(f"{storage}/{exp}")
    if found:
        what = "experiment.json" if found == [store.experiment_json] else ", ".join(found)
        raise BadInput(f"experiment {exp!r} already exists under {store.base} ({what}); use "
                       f"--resume {exp} to finish it, or another --experiment")


def _run_name(exp: str, storage: str, resume: bool) -> str:
    """The Tune experiment of this session: ``EXP`` first, ``EXP.resume-N`` for each resume."""
    if not resume:
        return exp
    n = 1
    while "://" not in storage and os.path.exists(f"{storage}/{exp}.resume-{n}"):
        n += 1
    return f"{exp}.resume-{n}" if "://" not in storage else \
        f"{exp}.resume-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def run(args: argparse.Namespace, space: SearchSpace | None) -> int:
    """Validate the environment, then run (or resume) the experiment. Returns the exit status."""
    from pipeline.analysis.results import ExperimentLock, LockHeld, ResultsError, Store, lock_path

    resume = args.resume is not None
    exp = _experiment_name(args, space or search_spaces.get(args.space))
    try:
        store = Store(args.results, (space or search_spaces.get(args.space)).name, exp)
        store.check_writable()
    except ResultsError as exc:
        raise BadInput(str(exc)) from None
    settings = None
    if resume:
        try:
            settings = store.read_json(store.experiment_json)
        except FileNotFoundError:
            raise BadInput(f"no experiment {exp!r} of space {store.space!r} under "
                           f"{args.results}; nothing to resume") from None
        except ResultsError as exc:
            raise BadInput(str(exc)) from None
        if not isinstance(settings, dict):
            raise BadInput(f"corrupt results file {store.experiment_json}: not a JSON object")
    journal = (settings or {}).get("journal") or args.journal
    if not journal and not store.is_local:
        raise BadInput("--journal PATH is needed when --results is a URI: the Optuna journal is "
                       "a local file on the driver")
    lock_file = lock_path(store, journal)  # one writer per experiment
    lock = ExperimentLock(lock_file, command=" ".join(["python -m pipeline.sweep",
                                                       *(args.argv or sys.argv[1:])]))
    try:
        note = lock.acquire()
    except LockHeld as exc:
        raise BadInput(f"{exp}: {exc}") from None
    except OSError as exc:
        raise BadInput(f"cannot create the lock {lock_file}: {exc}") from None
    try:
        if note:
            print(f"sweep: note: {note}", file=sys.stderr, flush=True)
        return _run_locked(args, space, exp, store, settings)
    finally:
        lock.release()


def _run_locked(args: argparse.Namespace, space: SearchSpace | None, exp: str, store: Store,
                settings: dict[str, Any] | None) -> int:
    import ray

    from pipeline.analysis.results import ResultsError, provenance, writable_folder
    from pipeline.orchestration.callbacks import Halt, Progress, ResultsWriter, TensorBoardWriter
    from pipeline.orchestration.journal import check_journal, repair_journal
    from pipeline.orchestration.searcher import PointStudySearcher, make_sampler
    from pipeline.orchestration.session import check_resources, connect, quiet_logs

    resume = settings is not None
    try:
        store.check_readable()
    except ResultsError as exc:
        raise BadInput(str(exc)) from None
    if settings is not None:
        space = _resumed_space(args, settings)
    assert space is not None
    storage = settings["storage"] if settings else (args.storage or f"{store.base}/tune")
    if "://" not in storage:
        storage = os.path.abspath(os.path.expanduser(storage))  # Tune needs an absolute path
        try:
            writable_folder(storage, "--storage")
        except ResultsError as exc:
            raise BadInput(str(exc)) from None
    journal = settings["journal"] if settings else \
        os.path.abspath(args.journal or f"{store.base}/optuna.journal")
    cut = 0
    try:
        if os.path.isdir(journal):
            raise ValueError(f"--journal {journal} is a folder; give the journal file")
        writable_folder(os.path.dirname(journal), "the journal's folder")
        if settings is not None:  # only the experiment's own journal is ever mended
            cut = repair_journal(journal)
        check_journal(journal)
        make_sampler(settings["sampler"] if settings else _opt(args, "sampler"), 0)
    except (ValueError, ResultsError, OSError) as exc:
        raise BadInput(str(exc)) from None
    recorded_ids = store.trial_ids() if settings is not None else set()
    if recorded_ids and not os.path.isfile(journal):
        raise BadInput(f"the journal {journal} is gone: its studies cannot be reconciled with the "
                       f"{len(recorded_ids)} recorded rows; restore it, or start a new "
                       f"experiment")
    if cut:
        print(f"sweep: note: cut an incomplete last line ({cut} bytes) off {journal}: a write "
              f"interrupted by a crash", file=sys.stderr, flush=True)
    if args.tensorboard:
        if not store.is_local:
            raise BadInput("--tensorboard writes event files beside local results; with a URI "
                           "--results, point TensorBoard at the Parquet curves instead")
        if importlib.util.find_spec("tensorboard") is None:
            raise BadInput("--tensorboard needs the tensorboard package: pip install tensorboard")
    if settings is None:
        _check_new(exp, store, storage, journal)
        _check_data(space)

    started_ray = connect(args.address, verbose=args.verbose)
    log_file = None
    try:
        asked = [settings[k] if settings and getattr(args, k) is None else _opt(args, k)
                 for k in ("cpus_per_trial", "gpus_per_trial")]
        cpus, gpus = check_resources(*asked)
        _check_memory(space, max((int(n["Resources"].get("memory", 0)) for n in ray.nodes()
                                  if n.get("Alive")), default=None) or _physical_memory(),
                      "the largest node")
        if gpus == 0 and any(c.get("device") == "cuda" for c in space.example_configs()):
            raise BadInput("device=cuda needs a GPU per trial: pass --gpus-per-trial (0.25 packs "
                           "four per GPU) on a cluster with GPUs, or use device=auto or cpu")
        if not args.verbose:
            log_file = quiet_logs(f"{store.base}/experiments/{exp}.log" if store.is_local else None)
        if settings is None:
            settings = _settings(args, space, exp, store, storage, journal, cpus, gpus)
            store.write_json(store.experiment_json, settings)
        else:
            session = {"cpus_per_trial": cpus, "gpus_per_trial": gpus,
                       "max_concurrent": args.max_concurrent if args.max_concurrent is not None
                       else settings["max_concurrent"],
                       "max_failures": args.max_failures if args.max_failures is not None
                       else settings["max_failures"]}
            settings = {**settings, **session}
        searcher = PointStudySearcher(space, experiment=exp, journal=journal,
                                      sampler=settings["sampler"], pruner=settings["pruner"],
                                      seed=settings["seed"], epochs=epochs_of(space))
        if resume:
            store.clean_stale()
            store.drop_orphan_curves()
        rec = searcher.plan(store.recorded())
        if resume:
            fixed = [f"{rec.told} told from their rows" if rec.told else "",
                     f"{rec.resumed} interrupted runs rerun under their Optuna trials"
                     if rec.resumed else "",
                     f"{len(rec.closed)} orphan Optuna trials closed FAIL" if rec.closed else "",
                     f"{rec.stale} Optuna trials finished without a row" if rec.stale else ""]
            extra = "; ".join(f for f in fixed if f)
            _say(f"resuming {exp}: {rec.recorded}/{rec.planned} runs recorded, {rec.missing} "
                 f"to run{'; ' + extra if extra else ''}")
        else:
            _say(f"experiment {exp}: {settings['trials']} trials "
                 f"({settings['points']} points x {space.samples_per_point}; "
                 f"{sampler_note(settings['sampler'], space)}); results in {store.base}")
        t0 = time.monotonic()
        halt = Halt()
        protocol = {"protocol": space.protocol(smoke=bool(settings["smoke"])),
                    "smoke": bool(settings["smoke"])}
        writer = ResultsWriter(settings["results"], space.name, exp, {**provenance(), **protocol},
                               searcher, halt)
        recorded_rows = store.read("trials")
        recorded_rows = recorded_rows[recorded_rows["replica"].fillna(0) == 0]
        progress = Progress(searcher.total, list(space.nuisance), space.metric,
                            epochs=epochs_of(space), done=rec.recorded, writer=writer,
                            every_s=args.progress_every, at_once=settings["max_concurrent"],
                            counts={str(k): int(v) for k, v in
                                    recorded_rows["status"].value_counts().items()})
        if searcher.remaining:
            try:
                extra = [TensorBoardWriter(f"{store.base}/tensorboard/{exp}")] \
                    if args.tensorboard else []
                fit(space, args, searcher, writer, halt, progress, settings,
                    _run_name(exp, storage, resume), extra)
                progress.close()
            except Exception as exc:  # noqa: BLE001 - Tune itself failed (its own disk writes)
                logging.getLogger("ray.tune.warmup_sweep").warning("Tune failed", exc_info=True)
                if writer.failure is None:
                    first = (str(exc).strip().splitlines() or [""])[0]
                    writer.failure = f"Tune stopped: {type(exc).__name__}: {first}"
        recorded = len(set(store.recorded()) & {r.run_id for r in searcher.runs})
        if writer.failure is not None:
            log = f" (details in {store.base}/experiments/{exp}.log)" if log_file else ""
            print(f"sweep: error: {writer.failure}{log}; stopped with {recorded}/"
                  f"{searcher.total} runs recorded; once fixed, finish with: "
                  f"{_resume_hint(args, store, exp)}", file=sys.stderr, flush=True)
            return 1
        if recorded >= searcher.total:
            try:
                store.compact()
                if not settings.get("finished_at"):  # a finished one keeps its own timing
                    settings = {**settings, "finished_at": datetime.now(UTC).isoformat(),
                                "wall_s": round(time.monotonic() - t0, 1),
                                "driver_cpus": os.cpu_count()}
                    store.write_json(store.experiment_json, settings)
            except OSError as exc:
                print(f"sweep: error: every run is recorded, but finishing the tables failed: "
                      f"{exc}; the rows are intact; rerun: {_resume_hint(args, store, exp)}",
                      file=sys.stderr, flush=True)
                return 1
            rows = store.read("trials").drop_duplicates("trial_id")
            counts = ", ".join(f"{n} {s}" for s, n in rows["status"].value_counts().items())
            _say(f"done: {recorded} trials ({counts}) in {time.monotonic() - t0:.0f}s; load them "
                 f"with pd.read_parquet({store.base + '/trials'!r})")
            return 0
        print(f"stopped with {recorded}/{searcher.total} trials recorded; finish with: "
              f"{_resume_hint(args, store, exp)}", file=sys.stderr, flush=True)
        return 1
    finally:
        if log_file is not None:
            logging.getLogger("ray").removeHandler(log_file)
            log_file.close()  # never raises (a full disk)
        if started_ray:
            ray.shutdown()


def _resume_hint(args: argparse.Namespace, store: Store, exp: str) -> str:
    return (f"python -m pipeline.sweep --space {args.space} --results {store.root} "
            f"--resume {exp}")


def _say(line: str) -> None:
    """Print a progress line; a closed stdout (``| head``) is not an error of the sweep."""
    try:
        print(line, flush=True)
    except OSError:
        pass


def _settings(args: argparse.Namespace, space: SearchSpace, exp: str, store: Store, storage: str,
              journal: str, cpus: float, gpus: float) -> dict[str, Any]:
    """The experiment.json content: command, resolved settings, space, seed, versions."""
    from pipeline.analysis.results import provenance

    points = space.points()
    return {"experiment": exp, "space": space.name, "plan": PLAN_FORMAT, "argv": sys.argv,
            "command": " ".join(["python -m pipeline.sweep", *(sys.argv[1:] if args.argv is None
                                                                else args.argv)]),
            "created_at": datetime.now(UTC).isoformat(), "seed": _opt(args, "seed"),
            "smoke": _opt(args, "smoke"), "sets": args.sets, "sampler": _opt(args, "sampler"),
            "pruner": _opt(args, "pruner"), "cpus_per_trial": cpus, "gpus_per_trial": gpus,
            "max_concurrent": args.max_concurrent, "max_failures": _opt(args, "max_failures"),
            "results": store.root, "storage": storage, "journal": journal,
            "points": len(points), "trials": len(points) * space.samples_per_point,
            "studies": [f"{exp}/{point_key(p)}" for p in points],
            "protocol": space.protocol(smoke=bool(_opt(args, "smoke"))),
            "definition": json.loads(json.dumps(space.describe(), default=str)),
            **provenance()}


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
        if args.resume is not None:  # the experiment's own definition is restored with it
            if args.dry_run:
                raise BadInput("--dry-run plans a new experiment; it does not apply to --resume")
            try:
                search_spaces.get(args.space)
            except ValueError as exc:
                raise BadInput(str(exc)) from None
            return run(args, None)
        space = plan_space(args)
        if args.if_exists == "resume" and not args.experiment:
            raise BadInput("--if-exists resume needs --experiment NAME (a generated name never "
                           "exists, so every resubmission would start afresh)")
        if args.if_exists == "resume" and not args.dry_run:
            resumed = _resume_if_exists(args, space)
            if resumed is not None:
                return run(resumed, None)
        if args.dry_run:
            _check_memory(space, _physical_memory(), "this machine")
            print_plan(space, args)
            return 0
        return run(args, space)
    except BadInput as exc:
        line = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
        print(f"sweep: error: {line}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:  # the disk or the network failed under the sweep: one line, exit 1
        print(f"sweep: error: {exc}; the record is consistent: fix the cause, then --resume",
              file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
