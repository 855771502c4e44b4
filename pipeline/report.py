"""Analysis of a sweep: ``python -m pipeline.report --space NAME`` writes a report with figures.

Reads ``<results>/<space>/trials`` and ``<results>/<space>/curves`` and writes ``report.md`` plus
PNG figures into ``--out`` (default ``<results>/<space>/report``); see :mod:`pipeline.analysis.report`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.analysis.report import build_report, load_table, one_protocol
from pipeline.analysis.results import NAME, ResultsError, writable_folder
from pipeline.core.config import parse_sets


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.report",
                                description=__doc__.split("\n")[0])
    p.add_argument("--space", required=True, help="search-space name (a folder under --results)")
    p.add_argument("--experiment", nargs="+", action="extend", default=[],
                   help="only these experiments (default: every experiment of the space)")
    p.add_argument("--results", default="results", help="results root (default: ./results)")
    p.add_argument("--out", default=None, help="output folder (default: <results>/<space>/report)")
    p.add_argument("--threshold", type=float, default=0.1,
                   help="error below which a length counts as learned (default 0.1)")
    p.add_argument("--protocol", default=None,
                   help="only the rows of this protocol (the trials' `protocol` column); needed "
                        "when the experiments held different things fixed")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only the rows with this config value (repeatable), e.g. "
                        "model.hidden_size=64 when the sweep varies a key the report does not draw")
    p.add_argument("--smoke", action="store_true",
                   help="report the --smoke runs (kept apart from full runs by default)")
    p.add_argument("--select", choices=["best", "all"], default="best",
                   help="per point: the best nuisance setting by validation loss, or all trials")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report CLI; returns 0, or 2 with a one-line error on bad input."""
    args = _parser().parse_args(argv)
    try:
        if not (args.threshold > 0 and math.isfinite(args.threshold)):
            raise ValueError(f"--threshold must be a finite number > 0 but got {args.threshold!r}")
        if not NAME.fullmatch(args.space):
            raise ValueError(f"--space {args.space!r} must be a space name (letters, digits, "
                             f"'.', '_', '-'), not a path")
        out = Path(args.out or Path(args.results) / args.space / "report")
        writable_folder(str(out.absolute()), "--out")
        trials = one_protocol(load_table(args.results, args.space, "trials", args.experiment),
                              protocol=args.protocol, smoke=args.smoke)
        for key, value in parse_sets(args.where).items():
            if key not in trials:
                raise ValueError(f"--where {key}: the trials table has no such column")
            trials = trials[trials[key] == value]
            if trials.empty:
                raise ValueError(f"no rows with {key}={value}")
        curves = load_table(args.results, args.space, "curves", args.experiment)
        curves = curves[curves.set_index(["experiment", "trial_id"]).index.isin(
            trials.set_index(["experiment", "trial_id"]).index)]
        path = build_report(trials, curves, out, space=args.space, threshold=args.threshold,
                            select=args.select, source=str(Path(args.results) / args.space))
    except (ValueError, ResultsError, OSError) as exc:
        print(f"pipeline.report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
