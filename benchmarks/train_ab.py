"""Our train step and the yardstick's, alternated in one process: for differences smaller than the
machine's run-to-run noise (two processes run minutes apart see different machine states).

    python benchmarks/train_ab.py --yardstick ../shared/bench/naive_ref.py --cell lstm --threads 2

Ours is the train step ``python -m pipeline.bench`` times (``pipeline.bench.make_steps``); the
yardstick's is its own ``train_step`` on a network of the same shape and a ``(T, B, 1)`` batch of
the same kind (copy task, MSE at the last step). After ``--warm`` steps each, one step of each is
timed in turn ``--reps`` times. Prints one JSON line with both medians and their ratio. The
yardstick is loaded from its file; the project never imports it otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time

import torch

from pipeline.bench import make_steps
from pipeline.core.config import CELLS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--yardstick", required=True, help="path to naive_ref.py")
    p.add_argument("--cell", choices=CELLS, default="lstm")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warm", type=int, default=5)
    p.add_argument("--reps", type=int, default=60)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    spec = importlib.util.spec_from_file_location("naive_ref", a.yardstick)
    ref = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(ref)  # type: ignore[union-attr]
    _, ours = make_steps(a.cell, a.hidden, a.seq_len, a.batch, a.layers, torch.device("cpu"))
    torch.manual_seed(0)
    ref_net = ref.Net(a.cell, 1, a.hidden, a.layers, 1)
    ref_opt = torch.optim.Adam(ref_net.parameters(), lr=1e-3)
    x = torch.randn(a.seq_len, a.batch, 1)

    def theirs() -> None:
        ref.train_step(ref_net, ref_opt, x, x[0].clone())

    steps = {"ours": ours, "ref": theirs}
    for fn in steps.values():
        for _ in range(a.warm):
            fn()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(a.reps):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(json.dumps({"cell": a.cell, "hidden": a.hidden, "seq_len": a.seq_len, "batch": a.batch,
                      "layers": a.layers, "threads": torch.get_num_threads(),
                      "train_step_ms_ours": round(med["ours"], 3), "train_step_ms_ref": round(med["ref"], 3),
                      "speed_up": round(med["ref"] / med["ours"], 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
