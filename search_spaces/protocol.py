"""Fixed protocols shared by the search spaces (docs/method.md, "Training protocol")."""

from __future__ import annotations

from typing import Any

REFERENCE: dict[str, Any] = {
    "model.hidden_size": 256,
    "model.num_layers": 2,
    "train.epochs": 50,
    "train.batch_size": 32,
    "train.clip": 0.0,
    "task.train_samples": 60_000,
    "task.test_samples": 10_000,
    "warmup.lr": 1e-2,
    "warmup.batch_size": 32,
    "warmup.target": 0.95,
    "warmup.update": "all",
    "vaa.steps": 10_000,
}
"""The reference implementation's defaults: hidden 256, 2 layers, batch 32, 50 epochs, 60,000
generated training samples (80/20 train/validation), 10,000 test samples, no clipping."""

TINY: dict[str, Any] = {
    "model.hidden_size": 8,
    "model.num_layers": 2,
    "train.epochs": 3,
    "task.train_samples": 200,
    "task.test_samples": 100,
    "warmup.max_stabilization": 20,
    "vaa.steps": 50,
    "vaa.samples": 16,
    "device": "cpu",
}
"""A protocol small enough for ``--smoke`` (seconds per trial on one CPU core)."""

CPU: dict[str, Any] = {
    "model.hidden_size": 32,
    "model.num_layers": 2,
    "task.train_samples": 3000,
    "task.test_samples": 1000,
    "train.epochs": 10,
    "train.batch_size": 32,
    "vaa.steps": 1000,
    "vaa.estimates": 2,
    "vaa.every": 1,
    "device": "cpu",
}
"""The CPU-scale protocol of the studies behind REPRODUCTION.md (``copy_cpu``, ``study_cpu``)."""
