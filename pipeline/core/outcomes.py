"""What a trial records, and how it can end early: divergence (a NaN/Inf) or a stop request
from the caller (pruning)."""

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


RECORD_FIELDS = ("status", "error", "diverged_phase", "diverged_step", "vaa_init", "vaa_star_init",
                 "vaa_warm", "vaa_star_warm", "best_valid_loss", "best_epoch", "test_loss",
                 "test_accuracy", "epochs_run", "warmup_steps_run", "n_params", "warmup_s",
                 "train_s", "device", "native_kernels", "flush_denormal")
CURVE_FIELDS = ("phase", "step", "train_loss", "valid_loss", "valid_accuracy", "vaa", "vaa_star",
                "elapsed_s")
"""A trial's record holds these beside its flat config keys; ``CURVE_FIELDS`` are each curve point's."""
