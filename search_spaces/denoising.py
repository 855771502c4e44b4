"""Denoising: recall 5 marked values after a quiet stretch; same roles as copy_task."""

from __future__ import annotations

from search_spaces.protocol import REFERENCE, TINY
from search_spaces.space import Inactive, LogUniform, SearchSpace, Smoke

SPACE = SearchSpace(
    name="denoising",
    description="denoising; cell x T x warm-up steps x warm-up fraction, lr tuned per point",
    scientific={
        "model.cell": ("gru", "lstm", "brc", "nbrc"),
        "task.seq_len": (100, 200, 400),
        "warmup.steps": (0, 25, 100),
        "warmup.fraction": (0.25, 0.5, 0.75, 1.0),
    },
    nuisance={"train.lr": LogUniform(1e-4, 3e-3)},
    fixed={**REFERENCE, "task.name": "denoising"},
    seeds=3,
    samples_per_point=4,
    inactive=(Inactive("warmup.fraction", "warmup.steps", 0, 0.0),),
    smoke=Smoke(
        scientific={"model.cell": ("gru", "brc"), "task.seq_len": (12, 20), "warmup.steps": (0, 3),
                    "warmup.fraction": (0.5, 1.0)},
        fixed=TINY,
        samples_per_point=3,
    ),
)
