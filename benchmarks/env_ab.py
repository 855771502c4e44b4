"""``python -m pipeline.bench`` under two values of one environment variable, in alternating
processes: for process-wide settings that cannot be switched back and forth inside one process
(glibc's malloc policy, say), on a machine too noisy for two runs minutes apart.

    python benchmarks/env_ab.py --var WARMUP_SWEEP_RETAIN_MEMORY --values 0 1 --rounds 6

Each round runs every cell once under each value, in turn. Prints a Markdown table of the medians
over rounds (warm-up and train step, ms) and the ratio first value / second value (> 1: the
second is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from compare import run  # the sibling script's runner (one JSON line, or None and a message)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--var", required=True, help="environment variable")
    p.add_argument("--values", nargs=2, required=True, metavar=("A", "B"))
    p.add_argument("--cells", nargs="+", default=["gru", "lstm", "mgu", "brc", "nbrc"])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--reps", type=int, default=8, help="timed steps per run (median)")
    p.add_argument("bench_args", nargs="*", help="more pipeline.bench arguments, after --")
    a = p.parse_args()
    keys = ("warmup_step_ms", "train_step_ms")
    res: dict[tuple[str, str], list[dict]] = {(c, v): [] for c in a.cells for v in a.values}
    for _ in range(a.rounds):
        for cell in a.cells:
            for v in a.values:
                os.environ[a.var] = v
                out = run([sys.executable, "-m", "pipeline.bench", "--cell", cell, "--threads", "2",
                           "--reps", str(a.reps), *a.bench_args, "--json"])
                if out is not None:
                    res[(cell, v)].append(out)
    A, B = a.values
    print(f"{a.var} = {A} vs {B}; medians over {a.rounds} rounds (ms)\n")
    print(f"| cell | warm-up {A} | warm-up {B} | ratio | train {A} | train {B} | ratio |")
    print("|---|---|---|---|---|---|---|")
    for cell in a.cells:
        if not (res[(cell, A)] and res[(cell, B)]):
            print(f"| {cell} | failed (see stderr) | | | | | |")
            continue
        m = {(v, k): statistics.median(r[k] for r in res[(cell, v)]) for v in a.values for k in keys}
        cols = []
        for k in keys:
            cols += [f"{m[(A, k)]:.1f}", f"{m[(B, k)]:.1f}", f"{m[(A, k)] / m[(B, k)]:.2f}x"]
        print(f"| {cell} | " + " | ".join(cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
