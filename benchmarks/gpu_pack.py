"""GPU packing throughput: the same fixed small copy_task sweep at several GPU shares per trial.

    python benchmarks/gpu_pack.py --results /tmp/pack --fractions 1 0.5 0.25

Runs ``python -m pipeline.sweep --space copy_task --smoke --set device=cuda --pruner none
--gpus-per-trial G --cpus-per-trial 1`` once per share G (a fresh local Ray each time; 36 trials,
the smoke grid of gru and brc), then prints one Markdown table: trials per hour
(3600 x trials / the sweep's own ``wall_s``, Ray's start-up excluded), the most trials that ran at
once (from the trials' recorded start and end times), and how many trials ran on CUDA (their
recorded ``device`` and ``gpu_name``). ``--device cpu`` runs the same plumbing without a GPU (the
sweep then drops the GPU request, as on any CPU-only cluster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.analysis.results import load

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flags import add_run_flags  # noqa: E402  (a sibling script)

SPACE = "copy_task"


def most_at_once(trials: pd.DataFrame) -> int:
    """The largest number of trials whose [started, finished] intervals overlap."""
    events = sorted([(t, 1) for t in trials["started_at"]] + [(t, -1) for t in trials["finished_at"]],
                    key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default="results-pack")
    p.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.5, 0.25])
    add_run_flags(p, device="cuda", devices=("cuda", "cpu"), threads=None)
    p.add_argument("--timeout", type=float, default=300, help="seconds per sweep before giving up")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to the sweep, e.g. model.cell=gru for the 18-trial half of the grid")
    a = p.parse_args()
    rows = []
    for g in a.fractions:
        exp = f"pack-{g:g}-{time.strftime('%H%M%S')}"
        cmd = [sys.executable, "-m", "pipeline.sweep", "--space", SPACE, "--smoke", "--set",
               f"device={a.device}", "--pruner", "none", "--experiment", exp, "--gpus-per-trial",
               f"{g:g}", "--cpus-per-trial", "1", "--results", a.results,
               *(x for kv in a.set for x in ("--set", kv))]
        print("+", " ".join(cmd), flush=True)
        try:
            rc = subprocess.run(cmd, timeout=a.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        meta_path = Path(a.results) / SPACE / "experiments" / f"{exp}.json"
        if rc != 0 or not meta_path.exists():
            rows.append({"GPU per trial": g, "trials": "-", "wall (s)": "-", "trials/hour": "-",
                         "most at once": "-", "on CUDA": f"sweep failed ({rc})"})
            continue
        meta = json.loads(meta_path.read_text())
        rows_ = load(SPACE, "trials", results=a.results, experiments=exp)  # one row per seed
        trials = rows_.drop_duplicates("trial_id")
        on_cuda = int((rows_["device"].astype(str).str.startswith("cuda")
                       & rows_["gpu_name"].notna()).groupby(rows_["trial_id"]).all().sum())
        cards = sorted(set(rows_["gpu_name"].dropna()))
        rows.append({"GPU per trial": g, "trials": len(trials), "wall (s)": meta["wall_s"],
                     "trials/hour": round(3600 * len(trials) / meta["wall_s"]),
                     "most at once": most_at_once(trials),
                     "on CUDA": f"{on_cuda}/{len(trials)}" + (f" ({', '.join(cards)})" if cards else "")})
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
