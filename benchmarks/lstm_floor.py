"""A lower bound on the LSTM warm-up step on this machine: its matrix products alone, at the speed
this machine's BLAS reaches on their shapes.

    python benchmarks/lstm_floor.py --hidden 64 --seq-len 100 --batch 32 --layers 2 --threads 2

One warm-up step (ALGORITHM.md) runs every layer forward and backward over the prefix (T steps, B
sequences, gradients flowing through it) and over the stabilisation run (S steps from the sampled
states; S ~ U{1..200} at schedule step 20, mean 100.5). Whatever the implementation, an LSTM layer
does per step the recurrent product ``(B, H) x (H, 4H)`` forward and two of that size backward (the
state gradient, step by step; the weight gradient, batchable), and the input products
``(T B, I) x (I, 4H)`` (forward, input gradient, weight gradient; batchable) over the prefix only:
in the stabilisation every layer's input is one constant vector u_l (ALGORITHM.md, step 3), so its
input product is one row. The prefix is counted at its least: each
sequence i run only to its own length c_i ~ U{1..T} (mean (T + 1) / 2), as the published code does
(our batched pass runs all T steps, twice that). The step-by-step products run at the rate
this machine reaches on one ``(B, H) x (H, 4H)`` product, the batchable ones at the rate of one
``(T B, K) x (K, 4H)`` product. Prints the FLOPs and the time those products alone take: no gate
function, no cell-state recovery, no VAA*, no optimiser step. Nothing else in a step is free, so
no implementation of the algorithm is faster than this on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flags import add_run_flags, add_shape_flags  # noqa: E402  (a sibling script)


def rate(m: int, k: int, n: int, reps: int) -> float:
    """FLOP/s of one (m, k) x (k, n) float32 product back to back (threads kept busy), the best of
    ``reps`` timed batches: the fastest this machine goes, so that the floor stays a lower bound."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    inner = max(50, int(2e9 // (2 * m * k * n)))  # at least 50 products, about 2 GFLOP a timing
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        times.append((time.perf_counter() - t0) / inner)
    return 2 * m * k * n / min(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_flags(p, with_cell=False)
    add_run_flags(p, device=None, threads=2, reps=10)
    p.add_argument("--input-size", type=int, default=1)
    p.add_argument("--stab", type=float, default=100.5, help="mean stabilisation length S")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    H, B, G = a.hidden, a.batch, 4 * a.hidden
    step_flops = 2 * B * H * G  # one recurrent product of one step
    seq, batch = 0.0, 0.0  # step-by-step and batchable FLOPs
    for layer in range(a.layers):
        I = a.input_size if layer == 0 else H
        for steps, with_input in (((a.seq_len + 1) / 2, True), (a.stab, False)):
            seq += 2 * steps * step_flops  # forward and state gradient, step by step
            batch += steps * step_flops  # recurrent weight gradient
            if with_input:  # the prefix's inputs; the stabilisation's are one constant row
                batch += 3 * steps * 2 * B * I * G  # forward, input gradient, weight gradient
    r_seq = rate(B, H, G, a.reps)
    r_batch = rate(a.seq_len * B, 2 * H, G, a.reps)
    floor_ms = 1e3 * (seq / r_seq + batch / r_batch)
    print(json.dumps({"hidden": H, "seq_len": a.seq_len, "batch": B, "layers": a.layers,
                      "threads": torch.get_num_threads(), "gflop": round((seq + batch) / 1e9, 3),
                      "step_product_gflops": round(r_seq / 1e9, 1),
                      "batched_product_gflops": round(r_batch / 1e9, 1),
                      "matmul_floor_ms": round(floor_ms, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
