"""The warm-up loop (docs/method.md, "One warm-up step").

Step k: draw S ~ U{1..min(1 + increment*k, cap)}; sample hidden states from a minibatch of training
inputs (targets unused); for every layer, run its warm part S steps from those states with a constant
input u_l ~ N(0, I) of the layer's input size and take VAA* of the final state; the loss is the mean
over layers of (VAA*_l - target)^2, minimised with Adam. The loop yields one metric dict per step.
Losses stay on the device and are checked every ``CHECK_EVERY`` steps, so there is no host
synchronisation per step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from pipeline.core.config import WarmupConfig
from pipeline.core.device import to_device
from pipeline.core.model import ParallelNet
from pipeline.core.multistability import draw_lengths, layer_vaa_star_group, sample_states_group
from pipeline.core.outcomes import Diverged
from pipeline.core.tasks import Split

CHECK_EVERY = 10
"""Warm-up steps between two reads of the losses from the device (and NaN checks)."""


def stabilisation_length(step: int, cfg: WarmupConfig, gen: torch.Generator) -> int:
    """S ~ U{1..min(1 + increment * step, max_stabilization)}."""
    high = min(1 + cfg.increment * step, cfg.max_stabilization)
    return int(torch.randint(1, high + 1, (1,), generator=gen))


class Minibatches:
    """The warm-up's minibatches of one network: indices into its pool of inputs.

    ``passes`` (the reference): each pass over the pool is a fresh random permutation cut into
    consecutive batches, the last one of a pass smaller when the pool does not divide; every
    input is used once per pass. ``replacement``: each batch drawn uniformly, with replacement.
    All draws come from ``gen``, the network's data generator.
    """

    def __init__(self, size: int, batch_size: int, gen: torch.Generator, *,
                 sampling: str = "passes") -> None:
        if size < 1:
            raise ValueError("the warm-up needs at least one input")
        self.size, self.batch_size, self.gen, self.sampling = size, batch_size, gen, sampling
        self._order: torch.Tensor | None = None
        self._at = 0

    def next(self) -> torch.Tensor:
        if self.sampling == "replacement":
            return torch.randint(self.size, (self.batch_size,), generator=self.gen)
        if self._order is None or self._at >= self.size:
            self._order, self._at = torch.randperm(self.size, generator=self.gen), 0
        idx = self._order[self._at:self._at + self.batch_size]
        self._at += idx.numel()
        return idx


def warmup_step(net: ParallelNet, opt: torch.optim.Optimizer, data: Split, step: int,
                cfg: WarmupConfig, gen: torch.Generator, device: torch.device,
                batches: Minibatches | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One warm-up step. Returns the loss and the per-layer VAA* (device tensors, detached)."""
    batches = batches or Minibatches(len(data), cfg.batch_size, gen, sampling=cfg.sampling)
    return warmup_step_group([net], [opt], [data], step, cfg, [gen], device, [batches])[0]


def warmup_step_group(nets: Sequence[ParallelNet], opts: Sequence[torch.optim.Optimizer],
                      datas: Sequence[Split], step: int, cfg: WarmupConfig,
                      gens: Sequence[torch.Generator], device: torch.device,
                      batches: Sequence[Minibatches] | None = None
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One warm-up step of several networks of one configuration (seed replicas), each with its own
    optimiser, data and generator, drawn from exactly as alone; the recurrent scans of all
    networks run grouped. Each network's loss depends on its own parameters only, so one backward
    of the summed losses gives every network its own gradients.

    Returns:
        Per network, the loss and the per-layer VAA* (device tensors, detached).
    """
    if batches is None:  # a single step: its batch is the start of a fresh pass
        batches = [Minibatches(len(d), cfg.batch_size, g, sampling=cfg.sampling)
                   for d, g in zip(datas, gens, strict=True)]
    Ss, xs, lengths = [], [], []
    for data, gen, mb in zip(datas, gens, batches, strict=True):
        Ss.append(stabilisation_length(step, cfg, gen))
        idx = mb.next()
        x, _ = data.batch(to_device(idx, data.y.device))  # (T, B, I)
        xs.append(x.to(device))
        lengths.append(draw_lengths(idx.numel(), x.size(0), gen))
    states = sample_states_group(nets, xs, lengths, detach=cfg.detach_prefix)
    vs = layer_vaa_star_group(nets, states, Ss, gens, cfg.eps)  # (L,) each
    losses = [(v - cfg.target).square().mean() for v in vs]
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    torch.stack(losses).sum().backward()
    for opt in opts:
        opt.step()
    return [(loss.detach(), v.detach()) for loss, v in zip(losses, vs, strict=True)]


def _metrics(step: int, loss: torch.Tensor, v: torch.Tensor) -> dict[str, Any]:
    m: dict[str, Any] = {"phase": "warmup", "step": step, "loss": float(loss),
                         "train_loss": float(loss), "vaa_star": float(v.mean())}
    m.update({f"vaa_star_l{i}": float(x) for i, x in enumerate(v)})
    return m


def warmup_loop(net: ParallelNet, data: Split, cfg: WarmupConfig, gen: torch.Generator,
                device: torch.device) -> Iterator[dict[str, Any]]:
    """Run ``cfg.steps`` warm-up steps, yielding ``{"phase": "warmup", "step", "loss",
    "train_loss", "vaa_star", "vaa_star_l<i>"}`` per step.

    The optimiser is a fresh Adam over all parameters (``update=all``, the reference behaviour) or
    over the warm parts only (``update=warm``); it is discarded afterwards.

    Raises:
        Diverged: a non-finite loss, with the step where it first happened.
    """
    for (entry,) in warmup_loop_group([net], [data], cfg, [gen], device):
        if isinstance(entry, Diverged):
            raise entry
        yield entry


def warmup_loop_group(nets: Sequence[ParallelNet], datas: Sequence[Split], cfg: WarmupConfig,
                      gens: Sequence[torch.Generator], device: torch.device
                      ) -> Iterator[list[dict[str, Any] | Diverged | None]]:
    """:func:`warmup_loop` for several networks of one configuration, in lockstep and grouped.

    Yields one list per step with one entry per network: its metrics, a :class:`Diverged` (its
    loss was non-finite at this step: it has ended and runs no further steps), or None (it ended
    before). Losses are read from the device every ``CHECK_EVERY`` steps, so an ended network
    may have run up to ``CHECK_EVERY - 1`` further steps, as alone.
    """
    opts = [torch.optim.Adam(net.warm_parameters() if cfg.update == "warm" else list(net.parameters()),
                             lr=cfg.lr) for net in nets]
    batches = [Minibatches(len(data), cfg.batch_size, gen, sampling=cfg.sampling)
               for data, gen in zip(datas, gens, strict=True)]
    live = list(range(len(nets)))
    pending: list[tuple[int, list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = []
    for k in range(cfg.steps):
        if not live:
            return
        out = warmup_step_group([nets[i] for i in live], [opts[i] for i in live],
                                [datas[i] for i in live], k, cfg, [gens[i] for i in live], device,
                                [batches[i] for i in live])
        pending.append((k, list(live), out))
        if len(pending) < CHECK_EVERY and k < cfg.steps - 1:
            continue
        losses = torch.stack([loss for *_, out_k in pending for loss, _ in out_k]).cpu()
        vs = torch.stack([v for *_, out_k in pending for _, v in out_k]).cpu()
        pos = 0
        for step, members, _ in pending:
            entries: list[dict[str, Any] | Diverged | None] = [None] * len(nets)
            for i in members:
                if i in live:
                    if bool(torch.isfinite(losses[pos])):
                        entries[i] = _metrics(step, losses[pos], vs[pos])
                    else:
                        entries[i] = Diverged("warmup", step)
                        live.remove(i)
                pos += 1
            yield entries
        pending.clear()
