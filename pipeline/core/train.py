"""The supervised training loop (docs/method.md, "Training protocol").

A fresh Adam, minibatches from the 80% training part, validation after every epoch, the exact VAA
every ``vaa.every`` epochs, the best-validation weights restored at the end. Losses stay on the device
during an epoch (no host synchronisation per step) and are checked at its end for NaN/Inf or a value
above ``train.divergence_threshold``, naming the first bad step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from pipeline.core.config import TrialConfig
from pipeline.core.device import to_device
from pipeline.core.model import ParallelNet, forward_group
from pipeline.core.multistability import measure_vaa
from pipeline.core.outcomes import Diverged
from pipeline.core.tasks import Split, Task

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

    def end_epoch(self, epoch: int, losses: list[Tensor]) -> dict[str, Any]:
        """Check the epoch's batch losses, validate, keep the best weights, measure VAA.

        Raises:
            Diverged: a non-finite training or validation loss.
        """
        net, task, tc = self.net, self.task, self.cfg.train
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


def epoch_group(trainers: Sequence[Trainer], epoch: int) -> list[dict[str, Any] | Exception]:
    """One epoch of several trainers of one configuration (seed replicas) in lockstep: each draws
    its own minibatches exactly as alone, the networks' forward passes run grouped
    (:func:`pipeline.core.model.forward_group`), one backward of the summed losses gives each network
    its own gradients, and each clips and steps its own optimiser.

    Returns:
        Per trainer, the epoch's metrics or the exception that ended it (:class:`Diverged`).
    """
    first = trainers[0]
    task0, tc, device = first.task, first.cfg.train, first.device
    n = len(task0.train)
    perms = [to_device(torch.randperm(n, generator=t.gen), t.task.train.y.device) for t in trainers]
    losses: list[list[Tensor]] = [[] for _ in trainers]
    for start in range(0, n, tc.batch_size):
        batches = [t.task.train.batch(p[start:start + tc.batch_size])
                   for t, p in zip(trainers, perms, strict=True)]
        outs = forward_group([t.net for t in trainers], [x.to(device) for x, _ in batches], task0.out_steps)
        step_losses = [t.task.loss(out, y.to(device))
                       for t, out, (_, y) in zip(trainers, outs, batches, strict=True)]
        for t in trainers:
            t.opt.zero_grad(set_to_none=True)
        torch.stack(step_losses).sum().backward()
        for t, loss, acc in zip(trainers, step_losses, losses, strict=True):
            if tc.clip > 0:
                torch.nn.utils.clip_grad_norm_(t.net.parameters(), tc.clip)
            t.opt.step()
            acc.append(loss.detach())
    results: list[dict[str, Any] | Exception] = []
    for t, acc in zip(trainers, losses, strict=True):
        try:
            results.append(t.end_epoch(epoch, acc))
        except Diverged as exc:
            results.append(exc)
    return results
