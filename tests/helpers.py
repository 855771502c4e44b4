"""Tiny real configs shared by the core tests (hidden 8-32, T 10-20, a few steps)."""

from __future__ import annotations

from typing import Any

TINY: dict[str, Any] = {
    "model.hidden_size": 8,
    "task.seq_len": 10,
    "task.train_samples": 200,
    "task.test_samples": 100,
    "train.epochs": 2,
    "warmup.steps": 3,
    "vaa.steps": 50,
    "vaa.samples": 16,
    "vaa.estimates": 2,
    "device": "cpu",
}


def tiny(**overrides: Any) -> dict[str, Any]:
    """The tiny config with dotted-key overrides (``tiny(**{"model.cell": "lstm"})``)."""
    return {**TINY, **overrides}
