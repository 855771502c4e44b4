"""REPRODUCTION.md from a finished sweep: each claim of the paper checked against the numbers.

    python -m pipeline.reproduction                        # the committed study's tables
    python -m pipeline.reproduction --out REPRODUCTION.md --figures docs/reproduction
    python -m pipeline.reproduction --results results --space study_cpu --experiment study-cpu

By default it reads the study committed under ``docs/reproduction/study_cpu`` (``trials.parquet``,
``curves.parquet``, ``experiment.json``) and writes into ``results/<space>/reproduction/``: the
repository's own ``REPRODUCTION.md`` is written only when named with ``--out``. With
``--results`` it reads one experiment of a results folder instead. The claims and their verdicts
are computed in :mod:`pipeline.analysis.claims`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.analysis.claims import write
from pipeline.analysis.report import load_table
from pipeline.analysis.results import NAME, ResultsError, writable_folder

TABLES = "docs/reproduction/study_cpu"
"""The committed study, relative to the repository root (or the working folder)."""


def _tables_folder(given: str) -> Path:
    path = Path(given)
    if path.is_absolute() or path.exists():
        return path
    repo = Path(__file__).resolve().parents[1] / given  # a checkout run from elsewhere
    return repo if repo.exists() else path


def read_tables(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A committed study's trials, curves and experiment record; ValueError naming what lacks."""
    missing = [n for n in ("trials.parquet", "curves.parquet", "experiment.json")
               if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"--tables {folder} lacks {', '.join(missing)}")
    try:
        meta = json.loads((folder / "experiment.json").read_text())
        return (pd.read_parquet(folder / "trials.parquet"),
                pd.read_parquet(folder / "curves.parquet"), meta)
    except (ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read the tables in {folder}: {first}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.reproduction",
                                description=__doc__.split("\n")[0])
    p.add_argument("--tables", default=None,
                   help=f"a folder of trials.parquet, curves.parquet and experiment.json "
                        f"(default {TABLES}, unless --results is given)")
    p.add_argument("--results", default=None,
                   help="read one experiment of this results folder instead of --tables")
    p.add_argument("--space", default="study_cpu", help="with --results (default study_cpu)")
    p.add_argument("--experiment", default="study-cpu", help="with --results (default study-cpu)")
    p.add_argument("--out", default=None,
                   help="the Markdown file to write (default results/SPACE/reproduction/"
                        "REPRODUCTION.md: the repository's own REPRODUCTION.md is only "
                        "written when named)")
    p.add_argument("--figures", default=None,
                   help="the figures' folder (default: beside --out)")
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--command", default=None, help="the sweep command to quote (default: recorded)")
    a = p.parse_args(argv)
    try:
        if a.tables is not None and a.results is not None:
            raise ValueError("give --tables or --results, not both")
        if not (a.threshold > 0 and math.isfinite(a.threshold)):
            raise ValueError(f"--threshold must be a finite number > 0 but got {a.threshold!r}")
        if not NAME.fullmatch(a.space):
            raise ValueError(f"--space {a.space!r} must be a space name, not a path")
        if a.results is None:
            given = a.tables or TABLES
            trials, curves, meta = read_tables(_tables_folder(given))
            space = str(meta.get("space") or a.space)
            source = given
            regenerate = f"python -m pipeline.reproduction --tables {given}"
        else:
            trials = load_table(a.results, a.space, "trials", [a.experiment])
            curves = load_table(a.results, a.space, "curves", [a.experiment])
            path = Path(a.results) / a.space / "experiments" / f"{a.experiment}.json"
            meta = json.loads(path.read_text()) if path.exists() else {}
            space, source = a.space, f"{a.results}/{a.space} (experiment {a.experiment})"
            regenerate = (f"python -m pipeline.reproduction --results {a.results} --space "
                          f"{a.space} --experiment {a.experiment}")
        out = Path(a.out) if a.out else Path(a.results or "results") / space / \
            "reproduction" / "REPRODUCTION.md"
        figs = Path(a.figures) if a.figures else out.parent / "figures"
        if a.out is not None or a.figures is not None:
            regenerate += f" --out {a.out or out} --figures {a.figures or figs}"
        if a.threshold != 0.1:
            regenerate += f" --threshold {a.threshold:g}"
        # both destinations first: nothing is written when either cannot be
        writable_folder(str(figs.absolute()), "--figures")
        writable_folder(str(out.absolute().parent), "--out's folder")
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give the file to write")
        out.parent.mkdir(parents=True, exist_ok=True)
        path = write(trials, curves, meta, out, figs, a.threshold, command=a.command,
                     regenerate=regenerate, source=source)
    except (ValueError, KeyError, OSError, ResultsError) as exc:
        print(f"pipeline.reproduction: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
