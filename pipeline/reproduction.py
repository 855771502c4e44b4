"""REPRODUCTION.md from a finished sweep: each claim of the paper checked against the numbers.

    python -m pipeline.reproduction --space copy_cpu --experiment repro-cpu \
        --results results --out REPRODUCTION.md --figures docs/reproduction

The claims and their verdicts are computed in :mod:`pipeline.analysis.claims`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.analysis.claims import write
from pipeline.analysis.results import NAME, ResultsError, writable_folder


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.reproduction",
                                description=__doc__.split("\n")[0])
    p.add_argument("--space", default="copy_cpu")
    p.add_argument("--experiment", default="repro-cpu")
    p.add_argument("--results", default="results")
    p.add_argument("--out", default=None,
                   help="the Markdown file to write (default RESULTS/SPACE/reproduction/"
                        "REPRODUCTION.md: the repository's own REPRODUCTION.md is only "
                        "written when named)")
    p.add_argument("--figures", default=None,
                   help="the figures' folder (default: beside --out)")
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--command", default=None, help="the sweep command to quote (default: recorded)")
    a = p.parse_args(argv)
    if a.out is None:
        a.out = str(Path(a.results) / a.space / "reproduction" / "REPRODUCTION.md")
    if a.figures is None:
        a.figures = str(Path(a.out).parent / "figures")
    try:
        if not (a.threshold > 0 and math.isfinite(a.threshold)):
            raise ValueError(f"--threshold must be a finite number > 0 but got {a.threshold!r}")
        if not NAME.fullmatch(a.space):
            raise ValueError(f"--space {a.space!r} must be a space name, not a path")
        # both destinations first: nothing is written when either cannot be
        writable_folder(str(Path(a.figures).absolute()), "--figures")
        writable_folder(str(Path(a.out).absolute().parent), "--out's folder")
        if Path(a.out).is_dir():
            raise ValueError(f"--out {a.out} is a folder; give the file to write")
        path = write(a.results, a.space, a.experiment, Path(a.out), Path(a.figures), a.threshold,
                     a.command)
    except (ValueError, KeyError, OSError, ResultsError) as exc:
        print(f"pipeline.reproduction: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
