"""The warm-up loop (ALGORITHM.md, "One warm-up step").

Step k: draw S ~ U{1..min(1 + increment*k, cap)}; sample hidden states from a minibatch of training
inputs (targets unused); for every layer, run its warm part S steps from those states with a constant
input u_l ~ N(0, I) of the layer's input size and take VAA* of the final state; the loss is the mean
over layers of (VAA*_l - target)^2, minimised with Adam. The loop yields one metric dict per step.
Losses stay on the device and are checked every ``CHECK_EVERY`` steps, so there is no host
synchronisation per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from pipeline.config import WarmupConfig
from pipeline.model import ParallelNet
from pipeline.multistability import draw_lengths, layer_vaa_star, sample_states
from pipeline.outcomes import Diverged
from pipeline.tasks import Split

CHECK_EVERY = 10
"""Warm-up steps between two reads of the losses from the device (and NaN checks)."""


def stabilisation_length(step: int, cfg: WarmupConfig, gen: torch.Generator) -> int:
    """S ~ U{1..min(1 + increment * step, max_stabilization)}."""
    high = min(1 + cfg.increment * step, cfg.max_stabilization)
    return int(torch.randint(1, high + 1, (1,), generator=gen))


def warmup_step(net: ParallelNet, opt: torch.optim.Optimizer, data: Split, step: int,
                cfg: WarmupConfig, gen: torch.Generator, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One warm-up step. Returns the loss and the per-layer VAA* (device tensors, detached)."""
    S = stabilisation_length(step, cfg, gen)
    idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
    x, _ = data.batch(idx.to(data.y.device))  # (T, B, I)
    x = x.to(device)
    lengths = draw_lengths(cfg.batch_size, x.size(0), gen)
    states = sample_states(net, x, lengths, detach=cfg.detach_prefix)
    v = layer_vaa_star(net, states, S, gen, cfg.eps)  # (L,)
    loss = (v - cfg.target).square().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), v.detach()


def warmup_loop(net: ParallelNet, data: Split, cfg: WarmupConfig, gen: torch.Generator,
                device: torch.device) -> Iterator[dict[str, Any]]:
    """Run ``cfg.steps`` warm-up steps, yielding ``{"phase": "warmup", "step", "loss",
    "train_loss", "vaa_star", "vaa_star_l<i>"}`` per step.

    The optimiser is a fresh Adam over all parameters (``update=all``, the reference behaviour) or
    over the warm parts only (``update=warm``); it is discarded afterwards.

    Raises:
        Diverged: a non-finite loss, with the step where it first happened.
    """
    params = net.warm_parameters() if cfg.update == "warm" else list(net.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for k in range(cfg.steps):
        loss, v = warmup_step(net, opt, data, k, cfg, gen, device)
        pending.append((k, loss, v))
        if len(pending) == CHECK_EVERY or k == cfg.steps - 1:
            losses = torch.stack([p[1] for p in pending]).cpu()
            vs = torch.stack([p[2] for p in pending]).cpu()
            for (step, _, _), loss_k, v_k in zip(pending, losses, vs, strict=True):
                if not bool(torch.isfinite(loss_k)):
                    raise Diverged("warmup", step)
                m: dict[str, Any] = {"phase": "warmup", "step": step, "loss": float(loss_k),
                                     "train_loss": float(loss_k), "vaa_star": float(v_k.mean())}
                m.update({f"vaa_star_l{i}": float(x) for i, x in enumerate(v_k)})
                yield m
            pending.clear()
