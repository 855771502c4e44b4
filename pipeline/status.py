"""Where a sweep stands, from its durable record: ``python -m pipeline.status --space NAME``.

Reads only what the sweep writes for good (``experiment.json``, the Parquet rows, the Optuna
journal, the lock file and the log) from any machine that sees the results (a laptop watching a
cluster job through a mounted folder), and never writes anything. Per experiment: whether it runs,
stopped or finished; the runs recorded by status, running (with the epoch each has reached) and
pending; an ETA from the measured run times; the best run of each scientific point so far; the
last errors.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline.analysis.results import NAME, ResultsError, Store, duration, lock_holder, lock_path

__all__ = ["experiment_status", "main"]


def _state(store: Store, settings: dict[str, Any]) -> str:
    """``finished``, ``running (...)`` (a process holds the experiment's lock), or ``stopped``."""
    if settings.get("finished_at"):
        return f"finished at {str(settings['finished_at'])[:19]}"
    info = lock_holder(lock_path(store, settings.get("journal")))
    if info is None:
        return "stopped (no sweep holds its lock)"
    host = info.get("host", "?")
    where = "" if host == socket.gethostname() else f" on {host}"
    return f"running: pid {info.get('pid', '?')}{where} since {info.get('started_at', '?')}"


def _overlap(rows: pd.DataFrame) -> int:
    """The most runs that ran at once (from their start and end times)."""
    events = sorted([(t, 1) for t in rows["started_at"].dropna()]
                    + [(t, -1) for t in rows["finished_at"].dropna()], key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return max(1, peak)


def experiment_status(store: Store) -> dict[str, Any]:
    """The status of one experiment as data (see :func:`main` for its rendering)."""
    from pipeline.orchestration.journal import read_studies  # optuna: only when watching

    settings = store.read_json(store.experiment_json)
    if not isinstance(settings, dict):
        raise ResultsError(f"corrupt results file {store.experiment_json}: not a JSON object")
    rows = store.read("trials")
    rows = rows[rows["replica"].fillna(0) == 0]
    total = int(settings.get("trials", 0))
    counts = {str(k): int(v) for k, v in rows["status"].value_counts().items()}
    epochs = int((settings.get("definition") or {}).get("fixed", {}).get("train.epochs", 0) or 0)
    running = []
    recorded = set(rows["trial_id"].astype(str))
    state = _state(store, settings)
    if state.startswith("running"):
        studies = read_studies(settings["journal"], settings.get("studies", []))
        for trials in studies.values():
            for t in trials:
                run = t.user_attrs.get("run_id")
                if t.state.name == "RUNNING" and run and run not in recorded:
                    running.append({"run": run, "epoch": max(t.intermediate_values, default=0)})
    done = rows.dropna(subset=["started_at", "finished_at"])
    pending = max(0, total - len(recorded) - len(running))
    eta = None
    if len(done) and total > len(recorded):
        took = (done["finished_at"] - done["started_at"]).dt.total_seconds()
        at_once = int(settings.get("max_concurrent") or _overlap(done))
        eta = {"seconds": float(took.mean()) * (total - len(recorded)) / at_once,
               "mean_run_s": float(took.mean()), "at_once": at_once}
    best = []
    completed = rows[rows["status"] == "completed"].dropna(subset=["objective"])
    if len(completed):
        nuisance = list((settings.get("definition") or {}).get("nuisance", {}))
        for point, grp in completed.groupby("point"):
            top = grp.loc[grp["objective"].idxmin()]
            best.append({"point": point, "objective": float(top["objective"]),
                         "run": top["trial_id"],
                         "setting": {k: top[k] for k in nuisance if k in top}})
    errors = [f"{r.trial_id} {r.status}: {r.error}" for r in
              rows[rows["status"].isin(["diverged", "error"])].sort_values("finished_at")
              .tail(3).itertuples()]
    log = f"{store.base}/experiments/{store.experiment}.log"
    if store.is_local and os.path.isfile(log):
        with open(log, errors="replace") as f:
            tail = [line.rstrip() for line in f.readlines()[-2000:]
                    if " ERROR " in line or " CRITICAL " in line]
        errors += [f"log: {line[:300]}" for line in tail[-3:]]
    return {"experiment": store.experiment, "state": state, "total": total,
            "recorded": len(recorded), "counts": counts, "running": running, "epochs": epochs,
            "pending": pending, "eta": eta, "best": best, "errors": errors,
            "protocol": settings.get("protocol"), "created_at": settings.get("created_at")}


def _render(st: dict[str, Any], space: str, results: str) -> list[str]:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(st["counts"].items())) or "none yet"
    lines = [f"experiment {st['experiment']} (protocol {st['protocol']}): {st['state']}",
             f"  runs: {st['recorded']}/{st['total']} recorded ({counts}); "
             f"{len(st['running'])} running; {st['pending']} pending"]
    if st["running"]:
        of = f"/{st['epochs']}" if st["epochs"] else ""
        lines.append("  running: " + ", ".join(f"{r['run']} epoch {r['epoch']}{of}"
                                             for r in sorted(st["running"],
                                                             key=lambda r: r["run"])))
    if st["eta"] and not st["state"].startswith("finished"):
        e = st["eta"]
        lines.append(f"  ETA about {duration(e['seconds'])} while running (runs take "
                     f"{duration(e['mean_run_s'])} on average, {e['at_once']} at a time)")
    if st["state"].startswith("stopped") and st["recorded"] < st["total"]:
        lines.append(f"  finish it with: python -m pipeline.sweep --space {space} --results "
                     f"{results} --resume {st['experiment']}")
    if st["best"]:
        lines.append("  best so far per point (best validation loss):")
        for b in st["best"]:
            setting = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in b["setting"].items())
            lines.append(f"    {b['point']}  {b['objective']:.4g}  ({b['run']} {setting})")
    if st["errors"]:
        lines.append("  last errors:")
        lines += [f"    {e}" for e in st["errors"]]
    return lines


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise ValueError(message)


def _space_folder(space: str) -> str:
    """The results folder of ``--space``: a space's name (or ``module:attribute``) resolves to
    the name it writes under; any other name is taken as the folder itself."""
    import search_spaces

    try:
        return search_spaces.get(space).name
    except (ValueError, ImportError, AttributeError):
        if not NAME.fullmatch(space):
            raise ValueError(f"--space {space!r} is no space and no folder name") from None
        return space


def main(argv: Sequence[str] | None = None) -> int:
    """Print the status of a space's experiments; 0, or 2 with one line on bad input."""
    p = _Parser(prog="python -m pipeline.status", description=__doc__.split("\n")[0])
    p.add_argument("--space", required=True, help="the space (a folder under --results)")
    p.add_argument("--experiment", help="one experiment (default: every one of the space)")
    p.add_argument("--results", default="results", help="results root (default ./results)")
    try:
        args = p.parse_args(argv)
        space = _space_folder(args.space)
        if args.experiment is not None and not NAME.fullmatch(args.experiment):
            raise ValueError(f"--experiment {args.experiment!r} must be a name, not a path")
        probe = Store(args.results, space, "_")
        folder = f"{probe.base}/experiments"
        if args.experiment:
            names = [args.experiment]
        else:
            import pyarrow.fs as pafs
            infos = probe.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            names = sorted(i.base_name[:-5] for i in infos if i.base_name.endswith(".json")
                           and not i.base_name.startswith("."))
        if not names:
            raise ValueError(f"no experiment of space {space!r} under {args.results}")
        for exp in names:
            store = Store(args.results, space, exp)
            if not store.exists(store.experiment_json):
                raise ValueError(f"no experiment {exp!r} of space {space!r} under {args.results}")
            for line in _render(experiment_status(store), args.space, args.results):
                print(line)
    except (ValueError, ResultsError, OSError, KeyError, pa.ArrowException) as exc:
        print(f"pipeline.status: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"-- as of {datetime.now(UTC).isoformat(timespec='seconds')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
