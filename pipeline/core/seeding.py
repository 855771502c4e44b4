"""Explicit seeding: one seed per trial, one generator per purpose."""

from __future__ import annotations

import torch

MEASURE_OFFSET = 7_919_000
"""The exact-VAA generator's seed is the trial's seed plus this (see :func:`seed_trial`)."""


def seed_trial(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Seed torch's global RNG (weight initialisation) and return two CPU generators: one for data
    and warm-up draws, one for the exact-VAA measurements (so that measuring never shifts the data
    stream). Called at the start of every trial, so reused actors never leak RNG state."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    measure = torch.Generator().manual_seed(seed + MEASURE_OFFSET)
    return data, measure
