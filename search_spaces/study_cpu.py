"""The CPU-scale study behind REPRODUCTION.md: copy and denoising, four cells, warm-up fraction
f in {0, 0.25, 0.5, 0.75, 1} at two warm-up lengths, T from 12 (every cold cell learns) to 100
(the cold GRU fails), 5 seeds per point; about an hour on 2 cores.

Same protocol as ``copy_cpu`` (hidden 32, 3,000 generated samples, 10 epochs). The learning rate
is fixed at 3e-3 for every point, so that the arms of a point differ only in their warm-up: with
288 points the hour buys either 5 seeds at one learning rate or about 2 seeds at a tuned one, and a
success rate needs the seeds (REPRODUCTION.md, "What this study does not show").
"""

from __future__ import annotations

from search_spaces.protocol import CPU
from search_spaces.space import Choice, Inactive, SearchSpace, Smoke

SPACE = SearchSpace(
    name="study_cpu",
    description="copy + denoising at CPU scale (REPRODUCTION.md): task x cell x T x warm-up "
                "length x fraction, 5 seeds, lr fixed",
    scientific={
        "task.name": ("copy", "denoising"),
        "model.cell": ("gru", "lstm", "brc", "nbrc"),
        "task.seq_len": (12, 25, 50, 100),
        "warmup.steps": (0, 25, 100),
        "warmup.fraction": (0.25, 0.5, 0.75, 1.0),
    },
    nuisance={"train.lr": Choice((3e-3,))},
    fixed={**CPU},
    seeds=5,
    samples_per_point=1,
    inactive=(Inactive("warmup.fraction", "warmup.steps", 0, 0.0),),
    smoke=Smoke(scientific={"model.cell": ("gru", "brc"), "task.seq_len": (12,),
                            "warmup.steps": (0, 3), "warmup.fraction": (0.5, 1.0)},
                fixed={"model.hidden_size": 8, "task.train_samples": 200, "train.epochs": 2,
                       "vaa.steps": 50},
                samples_per_point=1),
)
