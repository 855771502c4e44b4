"""Copy-first-input at CPU scale: the reproduction behind REPRODUCTION.md (about 1 h on 2 cores).

Small enough for a laptop (hidden 32, 3,000 samples, 10 epochs, lr fixed), large enough for the
effect to show: at T = 50 and beyond a cold GRU stays at chance while a warmed one learns.
"""

from __future__ import annotations

from search_spaces.protocol import CPU
from search_spaces.space import Choice, Inactive, SearchSpace, Smoke

SPACE = SearchSpace(
    name="copy_cpu",
    description="copy-first-input at CPU scale (REPRODUCTION.md): gru/lstm x T x cold/f=0.5/f=1",
    scientific={
        "model.cell": ("gru", "lstm"),
        "task.seq_len": (25, 50, 100, 200),
        "warmup.steps": (0, 100),
        "warmup.fraction": (0.5, 1.0),
    },
    nuisance={"train.lr": Choice((3e-3,))},
    fixed={"task.name": "copy", **CPU},
    seeds=3,
    samples_per_point=1,
    inactive=(Inactive("warmup.fraction", "warmup.steps", 0, 0.0),),
    smoke=Smoke(scientific={"model.cell": ("gru",), "task.seq_len": (10,)},
                fixed={"model.hidden_size": 8, "task.train_samples": 200, "train.epochs": 2,
                       "warmup.steps": 3, "vaa.steps": 50},
                samples_per_point=1),
)
