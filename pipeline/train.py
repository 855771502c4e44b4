"""The supervised training loop (ALGORITHM.md, "Training protocol").

A fresh Adam, minibatches from the 80% training part, validation after every epoch, the exact VAA
every ``vaa.every`` epochs, the best-validation weights restored at the end. Losses stay on the device
during an epoch (no host synchronisation per step) and are checked at its end for NaN/Inf or a value
above ``train.divergence_threshold``, naming the first bad step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from pipeline.config import TrialConfig
from pipeline.model import ParallelNet
from pipeline.multistability import measure_vaa
from pipeline.outcomes import Diverged
from pipeline.tasks import Split, Task

EVAL_BATCH = 1000


@torch.no_grad()
def evaluate(net: ParallelNet, task: Task, split: Split, device: torch.device
             ) -> tuple[float, float | None]:
    """Mean loss over ``split`` (and accuracy for classification)."""
    n = len(split)
    total = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for start in range(0, n, EVAL_BATCH):
        idx = torch.arange(start, min(start + EVAL_BATCH, n), device=split.y.device)
        x, y = split.batch(idx)
        x, y = x.to(device), y.to(device)
        out = net(x, task.out_steps)
        total += task.loss(out, y).double() * idx.numel()
        if task.classification:
            correct += (out[-1].argmax(-1) == y).sum()
    loss = float(total) / n
    return loss, (float(correct) / n if task.classification else None)


class Trainer:
    """Owns the optimiser and the best-validation snapshot of one training run."""

    def __init__(self, net: ParallelNet, task: Task, cfg: TrialConfig, gen: torch.Generator,
                 measure_gen: torch.Generator, device: torch.device) -> None:
        self.net, self.task, self.cfg, self.gen = net, task, cfg, gen
        self.measure_gen, self.device = measure_gen, device
        self.opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
        self.best_loss = math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Tensor] | None = None
        self.steps_done = 0

    def epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch, validate, measure VAA; returns the epoch's metrics.

        Raises:
            Diverged: a non-finite training or validation loss.
        """
        net, task, tc = self.net, self.task, self.cfg.train
        n = len(task.train)
        perm = torch.randperm(n, generator=self.gen).to(task.train.y.device)
        losses = []
        for start in range(0, n, tc.batch_size):
            x, y = task.train.batch(perm[start:start + tc.batch_size])
            loss = task.loss(net(x.to(self.device), task.out_steps), y.to(self.device))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), tc.clip)
            self.opt.step()
            losses.append(loss.detach())
        batch_losses = torch.stack(losses).cpu()  # one sync per epoch
        limit = tc.divergence_threshold
        bad = (~torch.isfinite(batch_losses) | (batch_losses > limit)).nonzero()
        if bad.numel():
            raise Diverged("train", self.steps_done + int(bad[0, 0]))
        self.steps_done += len(losses)
        valid_loss, valid_acc = evaluate(net, task, task.valid, self.device)
        if not math.isfinite(valid_loss) or valid_loss > limit:
            raise Diverged("train", self.steps_done - 1)
        if valid_loss < self.best_loss:
            self.best_loss, self.best_epoch = valid_loss, epoch
            self.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        every = self.cfg.vaa.every
        vaa = (measure_vaa(net, task.train, self.cfg.vaa, self.measure_gen, self.device)
               if every and epoch % every == 0 else None)
        return {"phase": "train", "step": epoch, "train_loss": float(batch_losses.mean()),
                "valid_loss": valid_loss, "valid_accuracy": valid_acc, "vaa": vaa,
                "vaa_star": None}

    def restore_best(self) -> None:
        """Load the best-validation weights (no-op before the first epoch)."""
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)


def train_loop(trainer: Trainer) -> Iterator[dict[str, Any]]:
    """Yield each epoch's metrics; restores the best-validation weights after the last epoch."""
    for epoch in range(1, trainer.cfg.train.epochs + 1):
        yield trainer.epoch(epoch)
    trainer.restore_best()
