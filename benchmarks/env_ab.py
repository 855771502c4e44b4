"""``benchmarks/bench.py`` under two values of one environment variable, in alternating processes:
for settings read once per process, or best compared from a fresh process each time, on a machine
too noisy for two runs minutes apart.

    python benchmarks/env_ab.py --var WARMUP_SWEEP_NATIVE --values 0 1 --rounds 6
    python benchmarks/env_ab.py --var WARMUP_SWEEP_NATIVE --values 0 1 --cells gru --hidden 256 \
        -- --replicas 4

Each round runs every cell once under each value, in turn. Prints a Markdown table of the medians
over rounds (warm-up and train step, ms) and the ratio first value / second value (> 1: the
second is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import run  # noqa: E402  (the sibling's runner: one JSON line, or None and a message)
from flags import DEFAULT_CELLS, add_run_flags, add_shape_flags, shape_argv  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--var", required=True, help="environment variable")
    p.add_argument("--values", nargs=2, required=True, metavar=("A", "B"))
    add_shape_flags(p, cells=DEFAULT_CELLS)
    add_run_flags(p, device="cpu", threads=2, rounds=6, reps=8)
    p.add_argument("bench_args", nargs="*", help="more benchmarks/bench.py arguments, after --")
    a = p.parse_args()
    keys = ("warmup_step_ms", "train_step_ms")
    res: dict[tuple[str, str], list[dict]] = {(c, v): [] for c in a.cells for v in a.values}
    for _ in range(a.rounds):
        for cell in a.cells:
            for v in a.values:
                os.environ[a.var] = v
                out = run([sys.executable, str(HERE / "bench.py"), "--cell", cell, *shape_argv(a),
                           "--device", a.device, "--threads", str(a.threads),
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
