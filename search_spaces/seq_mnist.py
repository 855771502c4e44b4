"""Sequential MNIST with trailing padding: memory of a 784-step image over P blank steps.

Needs the MNIST files: ``--set task.data_dir=PATH`` (IDX, gzipped or not, or mnist.npz); nothing is
downloaded.
"""

from __future__ import annotations

from search_spaces.protocol import REFERENCE, TINY
from search_spaces.space import Inactive, LogUniform, SearchSpace, Smoke

SPACE = SearchSpace(
    name="seq_mnist",
    description="sequential MNIST + padding; cell x pad x warm-up steps x fraction, lr tuned per "
                "point (needs --set task.data_dir=PATH)",
    scientific={
        "model.cell": ("gru", "lstm", "brc", "nbrc"),
        "task.pad": (0, 200, 500),
        "warmup.steps": (0, 25, 100),
        "warmup.fraction": (0.25, 0.5, 0.75, 1.0),
    },
    nuisance={"train.lr": LogUniform(1e-4, 3e-3)},
    fixed={**REFERENCE, "task.name": "seq_mnist"},
    seeds=3,
    samples_per_point=4,
    inactive=(Inactive("warmup.fraction", "warmup.steps", 0, 0.0),),
    smoke=Smoke(
        scientific={"model.cell": ("gru",), "task.pad": (0, 20), "warmup.steps": (0, 3),
                    "warmup.fraction": (1.0,)},
        fixed={**TINY, "train.epochs": 2},
        samples_per_point=3,
    ),
    requires={"task.data_dir": "a folder with the MNIST files (IDX, gzipped or not, or mnist.npz)"},
)
