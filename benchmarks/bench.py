"""Micro-benchmark of the core: median warm-up step and train step times.

    python benchmarks/bench.py --cell brc --hidden 64 --seq-len 100 --batch 32 --layers 2 \
        --device cpu --threads 2 --json

The settings mean what they mean for the speed yardstick (``benchmarks/reference.py``): a
network of ``layers`` layers of width ``hidden`` on input size 1, a warm-up step drawn at schedule
step 20 (S ~ U{1..200}), and a copy-task train step (MSE at the last step) on a ``(T, B, 1)``
batch. With ``--replicas R``, R seeds (0..R-1) take each step together, grouped as a trial's seed
replicas are. The process runs in a trial's CPU float mode (subnormals flushed,
:func:`pipeline.core.device.flush_denormals`; recorded as ``flush_denormal``). Prints one JSON line
of medians: ``warmup_step_ms``, ``train_step_ms`` (for all R together), ``samples_per_s`` (R x B
per train step), and, where the OS counts them, the mean page faults and kernel (system) CPU time
per step (``*_faults``, ``*_sys_ms``), counted rather than timed, so they hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from pipeline.core.config import CELLS, ModelConfig, WarmupConfig
from pipeline.core.device import flush_denormals, resolve_device
from pipeline.core.model import build_model, forward_group
from pipeline.core.tasks import Split
from pipeline.core.warmup import warmup_step_group

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flags import add_run_flags, add_shape_flags, not_positive  # noqa: E402  (a sibling script)


def _timed(fn: Callable[[], object], reps: int, warm: int, sync: Callable[[], None]
           ) -> tuple[float, dict[str, float]]:
    """Median wall time of ``fn`` in milliseconds, after ``warm`` untimed calls, and the mean page
    faults and system CPU ms per timed call (empty where the ``resource`` module is missing)."""
    for _ in range(warm):
        fn()
    times = []
    before = _usage()
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    after = _usage()
    counts = {k: round((after[k] - before[k]) / reps, 3) for k in before}
    return 1e3 * statistics.median(times), counts


def _usage() -> dict[str, float]:
    """This process's page faults (minor + major) and system CPU time (ms) so far."""
    try:
        import resource
    except ImportError:  # not on Unix
        return {}
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"faults": r.ru_minflt + r.ru_majflt, "sys_ms": 1e3 * r.ru_stime}


def make_steps(cell: str, hidden: int, seq_len: int, batch: int, layers: int, device: torch.device,
               replicas: int = 1) -> tuple[Callable[[], object], Callable[[], None]]:
    """The warm-up step and the train step that :func:`bench` times, as two closures over
    ``replicas`` fully warmed networks (f = 1), seeds 0..R-1, run grouped as a trial's seed
    replicas are (also used by ``benchmarks/profile_step.py`` and ``benchmarks/train_ab.py``)."""
    flush_denormals()  # a trial's CPU float mode
    nets, datas, wopts, topts, xs, ys = [], [], [], [], [], []
    wcfg = WarmupConfig(batch_size=batch)
    for r in range(replicas):
        torch.manual_seed(r)
        net = build_model(ModelConfig(cell=cell, hidden_size=hidden, num_layers=layers), 1, 1,
                          warm_width=hidden).to(device)
        x = torch.randn(seq_len, batch, 1, device=device)
        nets.append(net)
        xs.append(x)
        ys.append(x[:1].clone())
        datas.append(Split(x, ys[-1]))
        wopts.append(torch.optim.Adam(net.parameters(), lr=wcfg.lr))
        topts.append(torch.optim.Adam(net.parameters(), lr=1e-3))
    gens = [torch.Generator().manual_seed(r) for r in range(replicas)]

    def warmup_step() -> object:
        return warmup_step_group(nets, wopts, datas, 20, wcfg, gens, device)

    def train_step() -> None:
        outs = forward_group(nets, xs, 1)
        loss = sum(torch.nn.functional.mse_loss(o, y) for o, y in zip(outs, ys, strict=True))
        for opt in topts:
            opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        for opt in topts:
            opt.step()

    return warmup_step, train_step


def bench(cell: str, hidden: int, seq_len: int, batch: int, layers: int, device: torch.device,
          reps: int = 5, replicas: int = 1) -> dict[str, float]:
    """Time one warm-up step and one train step of ``replicas`` fully warmed networks (f = 1),
    seeds 0..R-1, run grouped as a trial's seed replicas are."""
    warmup_step, train_step = make_steps(cell, hidden, seq_len, batch, layers, device, replicas)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wu, wu_counts = _timed(warmup_step, reps, 1, sync)
    tr, tr_counts = _timed(train_step, 2 * reps, 2, sync)
    return {"warmup_step_ms": round(wu, 3), "train_step_ms": round(tr, 3),
            "samples_per_s": round(replicas * batch / (tr / 1e3), 1),
            **{f"warmup_step_{k}": v for k, v in wu_counts.items()},
            **{f"train_step_{k}": v for k, v in tr_counts.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.split("\n")[0])
    add_shape_flags(p, cell="gru", choices=CELLS)
    add_run_flags(p, device="cpu", threads=0, reps=5)
    p.add_argument("--replicas", type=int, default=1,
                   help="seed replicas trained together (grouped), as a trial with replicas=R")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    error = not_positive(args, ("hidden", "seq_len", "batch", "layers", "reps", "replicas"))
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    flush = flush_denormals()  # as a trial runs
    res = bench(args.cell, args.hidden, args.seq_len, args.batch, args.layers, device, args.reps,
                args.replicas)
    out = {"impl": "warmup-sweep", "cell": args.cell, "hidden": args.hidden,
           "seq_len": args.seq_len, "batch": args.batch, "layers": args.layers,
           "replicas": args.replicas,
           "device": str(device), "threads": torch.get_num_threads(), "flush_denormal": flush,
           **res}
    if torch.cuda.is_available() and device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(out) if args.json else
          " ".join(f"{k}={v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
