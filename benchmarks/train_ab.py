"""Our train step and the yardstick's, alternated in one process: for differences smaller than the
machine's run-to-run noise (two processes run minutes apart see different machine states).

    python benchmarks/train_ab.py --cell lstm --threads 2

Ours is the train step ``benchmarks/bench.py`` times (its ``make_steps``); the yardstick's is the
one ``benchmarks/reference.py`` times (its ``make_steps``), on a network of the same shape and a
``(T, B, 1)`` batch of the same kind (copy task, MSE at the last step). ``--yardstick`` may name
another script that has either that ``make_steps`` or a ``Net(cell, 1, hidden, layers, 1)`` and a
``train_step(net, opt, x, y)``. After ``--warm`` steps each, one step of each is timed in turn
``--reps`` times. Prints one JSON line with both medians and their ratio. The yardstick is loaded
from its file; the project never imports it otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.core.config import CELLS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import make_steps  # noqa: E402  (sibling scripts)
from flags import add_run_flags, add_shape_flags  # noqa: E402


def yardstick_train_step(path: str, cell: str, hidden: int, seq_len: int, batch: int, layers: int
                         ) -> Callable[[], object]:
    """The train step of the yardstick script at ``path``, on CPU, seed 0."""
    spec = importlib.util.spec_from_file_location("yardstick", path)
    ref = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(ref)  # type: ignore[union-attr]
    if hasattr(ref, "make_steps"):
        return ref.make_steps(cell, hidden, seq_len, batch, layers, torch.device("cpu"))[1]
    torch.manual_seed(0)
    net = ref.Net(cell, 1, hidden, layers, 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(seq_len, batch, 1)
    return lambda: ref.train_step(net, opt, x, x[0].clone())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--yardstick", default=str(HERE / "reference.py"),
                   help="the yardstick script (default: benchmarks/reference.py)")
    add_shape_flags(p, cell="lstm", choices=CELLS)
    add_run_flags(p, device=None, threads=2, reps=60)
    p.add_argument("--warm", type=int, default=5, help="untimed steps of each first")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    _, ours = make_steps(a.cell, a.hidden, a.seq_len, a.batch, a.layers, torch.device("cpu"))
    theirs = yardstick_train_step(a.yardstick, a.cell, a.hidden, a.seq_len, a.batch, a.layers)
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
