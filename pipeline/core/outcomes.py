"""How a trial can end early: divergence (a NaN/Inf) or a stop request from the caller (pruning)."""

from __future__ import annotations


class Diverged(Exception):
    """A loss became NaN or Inf (or exceeded the divergence threshold).

    Args:
        phase: ``"warmup"`` or ``"train"``.
        step: warm-up step, or training minibatch step counted from 0 across epochs.
    """

    def __init__(self, phase: str, step: int) -> None:
        super().__init__(f"non-finite or exploding loss in {phase} at step {step}")
        self.phase = phase
        self.step = step


class StopTrial(Exception):
    """Raised by a ``report`` callback to stop the trial (pruning); the trial ends as ``pruned``."""
