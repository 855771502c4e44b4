"""Run the project's benchmark and the speed yardstick back to back, and print ratios of medians.

    python benchmarks/compare.py --device cpu --threads 2 \
        --hidden 64 --seq-len 100 --batch 32 --layers 2 --rounds 3 --cells gru lstm mgu brc nbrc

On a GPU: ``--device cuda --hidden 256 --seq-len 300`` (``benchmarks/gpu_session.sh`` runs it).

Each round runs both implementations once per cell (alternating, so machine noise hits both); the
table reports each side's median over rounds and the ratio yardstick / project (higher = faster).
The project's side is ``benchmarks/bench.py``; the yardstick is ``benchmarks/reference.py`` (the
method as its published code runs it) unless ``--yardstick`` names another script with the same
flags and JSON keys. Both are only run as separate processes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from flags import DEFAULT_CELLS, add_run_flags, add_shape_flags, shape_argv  # noqa: E402  (a sibling)


def run(cmd: list[str]) -> dict | None:
    """One run's JSON line, or None (its error printed to stderr) when it fails: one crashing cell
    (say, out of memory on a GPU) leaves the other rows of the table."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        pass
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    print(f"failed (exit {proc.returncode}): {' '.join(cmd[1:4])}...: {tail[0]}", file=sys.stderr)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--yardstick", default=str(HERE / "reference.py"),
                   help="the yardstick script (default: benchmarks/reference.py)")
    add_shape_flags(p, cells=DEFAULT_CELLS)
    add_run_flags(p, device="cpu", threads=2, rounds=3, reps=5)
    p.add_argument("--ref-reps", type=int, default=5,
                   help="timed warm-up steps per run of the yardstick (2 x this many train steps); "
                        "lower it for its slow GPU cells (a BRC warm-up step takes seconds there)")
    p.add_argument("--jsonl", help="also append every run's JSON line here")
    a = p.parse_args()
    shape = [*shape_argv(a), "--device", a.device]
    threads = ["--threads", str(a.threads)] if a.device == "cpu" else []
    res: dict[tuple[str, str], list[dict | None]] = {}
    for _ in range(a.rounds):
        for cell in a.cells:
            res.setdefault((cell, "ours"), []).append(
                run([sys.executable, str(HERE / "bench.py"), "--cell", cell, *shape, *threads,
                     "--reps", str(a.reps), "--json"]))
            res.setdefault((cell, "ref"), []).append(
                run([sys.executable, a.yardstick, "--cell", cell, *shape, *threads,
                     "--reps", str(a.ref_reps)]))
            if a.jsonl:
                with open(a.jsonl, "a") as f:
                    for side in ("ours", "ref"):
                        if res[(cell, side)][-1] is not None:
                            f.write(json.dumps(res[(cell, side)][-1]) + "\n")
    machine = (torch.cuda.get_device_name() if a.device == "cuda" else
               f"{platform.processor() or platform.machine()}, {a.threads} threads")
    print(f"machine: {machine}; torch {torch.__version__}; H={a.hidden} T={a.seq_len} "
          f"B={a.batch} L={a.layers}; medians over {a.rounds} rounds\n")
    print("| cell | warm-up step ref (ms) | ours (ms) | speed-up | train step ref (ms) | ours (ms) "
          "| speed-up |")
    print("|---|---|---|---|---|---|---|")
    failed = False
    for cell in a.cells:
        runs = {side: [r for r in res[(cell, side)] if r is not None] for side in ("ours", "ref")}
        if not all(runs.values()):
            print(f"| {cell} | failed (see stderr) | | | | | |")
            failed = True
            continue
        med = {(side, key): statistics.median(r[key] for r in runs[side])
               for side in ("ours", "ref") for key in ("warmup_step_ms", "train_step_ms")}
        wr, wo = med[("ref", "warmup_step_ms")], med[("ours", "warmup_step_ms")]
        tr, to = med[("ref", "train_step_ms")], med[("ours", "train_step_ms")]
        print(f"| {cell} | {wr:.1f} | {wo:.1f} | {wr / wo:.1f}x | {tr:.1f} | {to:.1f} | "
              f"{tr / to:.1f}x |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
