"""Where the time of one warm-up step and one train step goes: torch.profiler's table per cell.

    python benchmarks/profile_step.py --cells gru brc --device cuda --hidden 256 --seq-len 300

The steps are the ones ``benchmarks/bench.py`` times (same settings, same meaning); each is run
``--warm`` times untimed, then ``--steps`` times under the profiler. Prints, per cell and step, the
operations sorted by self device time (CUDA) or self CPU time, ``--top`` rows, and the number of
kernels launched per step on a GPU: what to look at when a speed target is missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from pipeline.core.config import CELLS
from pipeline.core.device import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_steps  # noqa: E402  (sibling scripts)
from flags import add_run_flags, add_shape_flags  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_shape_flags(p, cells=("gru", "brc"), choices=CELLS)
    add_run_flags(p, device="cpu", threads=0)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--warm", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    for cell in a.cells:
        steps = make_steps(cell, a.hidden, a.seq_len, a.batch, a.layers, device, a.replicas)
        for name, step in zip(("warm-up step", "train step"), steps, strict=True):
            for _ in range(a.warm):
                step()
            if cuda:
                torch.cuda.synchronize()
            with profile(activities=activities) as prof:
                for _ in range(a.steps):
                    step()
                if cuda:
                    torch.cuda.synchronize()
            print(f"\n## {cell}, {name} (H={a.hidden} T={a.seq_len} B={a.batch} L={a.layers} "
                  f"R={a.replicas}, {device}; totals over {a.steps} steps)")
            if cuda:
                kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
                print(f"kernels per step: {kernels / a.steps:.0f}")
            print(prof.key_averages().table(sort_by=sort, row_limit=a.top, max_name_column_width=48))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
