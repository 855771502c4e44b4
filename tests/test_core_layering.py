"""The core imports torch/numpy only: no ray, optuna, pyarrow or pandas."""

from __future__ import annotations

import subprocess
import sys

CORE = ["config", "seeding", "tasks", "cells", "fused", "model", "multistability", "warmup",
        "train", "trial", "outcomes"]


def test_core_loads_neither_ray_nor_optuna() -> None:
    code = ("import sys\n" + "".join(f"import pipeline.{m}\n" for m in CORE)
            + "bad = sorted(m for m in ('ray', 'optuna', 'pyarrow', 'pandas') if m in sys.modules)\n"
            + "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
