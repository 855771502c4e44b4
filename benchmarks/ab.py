"""Two ways of running the same warm-up and train steps, alternated in one process (the fair way
to compare them on a noisy shared machine): the native CPU kernels against the torch code, or
grouped scans against one cell at a time, the ragged prefix pass of the warm-up's state
sampling against one pass over the whole sequence, or subnormal floats flushed to zero (a trial's
CPU float mode, :func:`pipeline.core.device.flush_denormals`) against IEEE gradual underflow.

    python benchmarks/ab.py --what native --cells gru lstm mgu brc nbrc
    python benchmarks/ab.py --what group --cells gru brc --replicas 4
    python benchmarks/ab.py --what ragged --cells lstm gru
    python benchmarks/ab.py --what flush --loss-scale 1e-36 --seq-len 300

``--loss-scale`` multiplies the train loss: 1e-36 puts every gradient of the train step in or near
the subnormal range (below 1.2e-38), the worst case of gradients that decay over long sequences.

Each round runs, for each side, ``--warmups`` warm-up steps (at schedule step 20, S drawn from the
same seeds on both sides, so both do the same work) and ``--trains`` train steps of ``--replicas``
networks (seeds 0..R-1, f = 1), from the same initial weights. Prints one JSON line per cell and
side: the medians over rounds of the mean warm-up step and of the median train step, in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from pipeline.core import multistability
from pipeline.core.config import CELLS, ModelConfig, WarmupConfig
from pipeline.core.device import flush_denormals
from pipeline.core.model import build_model, forward_group
from pipeline.core.tasks import Split
from pipeline.core.warmup import warmup_step_group

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flags import DEFAULT_CELLS, add_run_flags, add_shape_flags  # noqa: E402  (a sibling script)

SIDES = {"native": ("native", "torch"), "group": ("grouped", "alone"), "ragged": ("ragged", "full"),
         "flush": ("flush", "ieee")}


def _use(what: str, side: str, cell_class: type) -> None:
    """Switch the process to ``side``."""
    if what == "native":
        os.environ["WARMUP_SWEEP_NATIVE"] = "1" if side == "native" else "0"
    elif what == "ragged":
        multistability.RAGGED_PREFIX = side == "ragged"
    elif what == "flush":
        torch.set_flush_denormal(side == "flush")
    else:
        cell_class.groups_well = classmethod(lambda cls, device, on=side == "grouped": on)


def run(cell: str, what: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    nets, datas, xs = [], [], []
    for r in range(args.replicas):
        torch.manual_seed(r)
        nets.append(build_model(ModelConfig(cell=cell, hidden_size=args.hidden, num_layers=args.layers), 1, 1,
                                warm_width=args.hidden))
        x = torch.randn(args.seq_len, args.batch, 1)
        xs.append(x)
        datas.append(Split(x, x[:1].clone()))
    cfg = WarmupConfig(batch_size=args.batch)
    wopts = [torch.optim.Adam(n.parameters(), lr=cfg.lr) for n in nets]
    topts = [torch.optim.Adam(n.parameters(), lr=1e-3) for n in nets]
    initial = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    device = torch.device("cpu")
    cell_class = type(nets[0].layers[0].warm)
    saved = cell_class.__dict__.get("groups_well")
    switch = os.environ.get("WARMUP_SWEEP_NATIVE")
    ragged = multistability.RAGGED_PREFIX

    def warmup(i: int) -> None:
        gens = [torch.Generator().manual_seed(1000 * i + r) for r in range(len(nets))]
        warmup_step_group(nets, wopts, datas, 20, cfg, gens, device)

    def train() -> None:
        outs = forward_group(nets, xs, 1)
        loss = sum(torch.nn.functional.mse_loss(o, x[:1]) for o, x in zip(outs, xs, strict=True))
        loss = loss * args.loss_scale
        for o in topts:
            o.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        for o in topts:
            o.step()

    times: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in SIDES[what]}
    try:
        for _ in range(args.rounds):
            for side in SIDES[what]:
                _use(what, side, cell_class)
                for net, state in zip(nets, initial, strict=True):
                    net.load_state_dict(state)
                warmup(-1)
                train()
                t = []
                for i in range(args.warmups):
                    t0 = time.perf_counter()
                    warmup(i)
                    t.append(time.perf_counter() - t0)
                times[side][0].append(1e3 * statistics.fmean(t))
                t = []
                for _ in range(args.trains):
                    t0 = time.perf_counter()
                    train()
                    t.append(time.perf_counter() - t0)
                times[side][1].append(1e3 * statistics.median(t))
    finally:
        multistability.RAGGED_PREFIX = ragged
        flush_denormals()
        if switch is None:
            os.environ.pop("WARMUP_SWEEP_NATIVE", None)
        else:
            os.environ["WARMUP_SWEEP_NATIVE"] = switch
        if saved is None:
            if "groups_well" in cell_class.__dict__:
                delattr(cell_class, "groups_well")
        else:
            cell_class.groups_well = saved
    return {side: {"warmup_step_ms": round(statistics.median(w), 2),
                   "train_step_ms": round(statistics.median(tr), 2)} for side, (w, tr) in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", choices=sorted(SIDES), required=True)
    add_shape_flags(p, cells=DEFAULT_CELLS, choices=CELLS)
    add_run_flags(p, device=None, threads=2, rounds=4)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--warmups", type=int, default=6)
    p.add_argument("--trains", type=int, default=8)
    p.add_argument("--loss-scale", type=float, default=1.0, help="factor on the train loss")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    flush_denormals()
    for cell in args.cells:
        for side, res in run(cell, args.what, args).items():
            print(json.dumps({"cell": cell, "side": side, "replicas": args.replicas, "threads": args.threads,
                              "hidden": args.hidden, "seq_len": args.seq_len, "batch": args.batch,
                              "loss_scale": args.loss_scale, **res}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
