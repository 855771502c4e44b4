"""Reachable multistability: VAA, its differentiable approximation VAA*, hidden-state sampling and
the exact VAA of a network (ALGORITHM.md, "VAA", "VAA*", "Sampling reachable hidden states").
"""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.cells import State
from pipeline.config import VaaConfig
from pipeline.model import ParallelNet
from pipeline.tasks import Split

STAB_CHUNK = 512
"""Time steps per chunk of the exact-VAA stabilisation run (bounds memory for S = 10,000)."""


def pairwise_distances(states: Tensor) -> Tensor:
    """Euclidean distances ``(n, d) -> (n, n)`` by explicit broadcast differences.

    ``torch.cdist``'s matmul path has a diagonal of ~3e-3 instead of 0 above 25 rows, larger than
    eps. The square root is taken of a floor of 1e-30 so that coincident states (d = 0) have a
    finite (zero) gradient instead of NaN; distances below 1e-15 are far below any eps.
    """
    diff = states.unsqueeze(1) - states.unsqueeze(0)  # (n, n, d)
    return diff.square().sum(-1).clamp_min(1e-30).sqrt()


def vaa(states: Tensor, eps: float = 1e-4) -> Tensor:
    """Variability amongst attractors: ``(1/n) sum_i 1 / #{j : ||h_i - h_j|| < eps}``.

    Args:
        states: ``(n, d)`` final states, one per sampled input history.
        eps: distance tolerance.

    Returns:
        A scalar tensor in ``[1/n, 1]``; k tight, well-separated clusters give ``k/n``.
    """
    close = (pairwise_distances(states.detach()) < eps).sum(dim=1)  # (n,), includes j = i
    return (1.0 / close.to(states.dtype)).mean()


def vaa_star(states: Tensor, eps: float = 1e-4) -> Tensor:
    """Differentiable approximation of VAA on ``tanh(states)``.

    ``c_ij = 1 - relu(d_ij - eps) / (d_ij + 1e-6)``, ``VAA* = (1/n) sum_i 1 / sum_j c_ij``.

    Args:
        states: ``(n, d)`` layer states (LSTM: ``[h; c]`` concatenated).
        eps: distance tolerance.
    """
    d = pairwise_distances(torch.tanh(states))  # (n, n)
    c = 1.0 - torch.relu(d - eps) / (d + 1e-6)
    return (1.0 / c.sum(dim=1)).mean()


def sample_states(net: ParallelNet, x: Tensor, lengths: Tensor, *, detach: bool = False
                  ) -> list[State]:
    """Every layer's state after running the network from zero over ``x[:c_i, i]``.

    One batched pass over the whole sequence and a gather at ``t = c_i`` (identical to one prefix
    run per sample, since a prefix's states do not depend on later inputs).

    Args:
        net: the network.
        x: ``(T, B, I)`` inputs.
        lengths: ``(B,)`` prefix lengths ``c_i`` in ``1..T``.
        detach: cut gradients through the prefix pass.

    Returns:
        One tuple of ``(B, H)`` tensors per layer (LSTM: ``(h, c)``).
    """
    idx = (lengths - 1).to(x.device)  # (B,)
    cols = torch.arange(x.size(1), device=x.device)
    out: list[State] = []
    for layer in net.layers:
        seqs = layer.forward_states(x)  # tuple of (T, B, H)
        out.append(tuple((s[idx, cols].detach() if detach else s[idx, cols]) for s in seqs))
        x = seqs[0]
    return out


def draw_lengths(batch: int, seq_len: int, gen: torch.Generator) -> Tensor:
    """Prefix lengths ``c_i ~ U{1..T}`` on the CPU generator."""
    return torch.randint(1, seq_len + 1, (batch,), generator=gen)


def layer_vaa_star(net: ParallelNet, states: list[State], steps: int, gen: torch.Generator,
                   eps: float) -> Tensor:
    """VAA* of each layer's warm part after ``steps`` steps of a constant input ``u_l ~ N(0, I)``.

    For a network without warm part (f = 0) the whole layer is measured instead.

    Returns:
        ``(L,)`` tensor of per-layer VAA*.
    """
    vals = []
    for layer, state in zip(net.layers, states, strict=True):
        cell, cols = next(layer.parts())  # the warm part when it exists
        ref = state[0]
        n = ref.size(0)
        u = torch.randn(1, 1, layer.input_size, generator=gen).to(ref)
        _, final = cell(u.expand(steps, n, -1), tuple(s[:, cols] for s in state))
        vals.append(vaa_star(torch.cat(final, dim=-1), eps))
    return torch.stack(vals)


@torch.no_grad()
def network_vaa(net: ParallelNet, x: Tensor, gen: torch.Generator, *, steps: int = 10_000,
                eps: float = 1e-4, estimates: int = 1) -> float:
    """The exact VAA of a network, averaged over ``estimates`` independent estimates.

    Each estimate: sample one state per input column (random prefix lengths), run the whole stack
    ``steps`` steps with one constant input ``u ~ N(0, I)`` (its own ``u``), and measure VAA on all
    layers' final states concatenated (LSTM: h and c); no tanh. The samples of every estimate
    run side by side in one batch: columns are independent, so giving each group its own constant
    input is exactly ``estimates`` separate runs.

    Args:
        net: the network.
        x: ``(T, estimates * n, I)`` training inputs; column block e feeds estimate e.
        gen: CPU generator for the prefix lengths and the inputs ``u``.
        steps: stabilisation steps S.
        eps: distance tolerance.
        estimates: number of estimates averaged (the reference code uses 10 batches of 32).
    """
    total = x.size(1)
    if total % estimates:
        raise ValueError(f"{total} samples do not split into {estimates} estimates")
    n = total // estimates
    states = sample_states(net, x, draw_lengths(total, x.size(0), gen))
    u = torch.randn(estimates, 1, net.input_size, generator=gen).to(x)
    u = u.expand(estimates, n, -1).reshape(1, total, -1)  # (1, E*n, I): one u per estimate
    done = 0
    while done < steps:
        k = min(STAB_CHUNK, steps - done)
        _, states = net.run(u.expand(k, -1, -1), states)
        done += k
    flat = torch.cat([s for layer_state in states for s in layer_state], dim=-1)  # (E*n, sum H)
    if not bool(torch.isfinite(flat).all()):
        return float("nan")
    flat = flat.double().view(estimates, n, -1)
    return float(torch.stack([vaa(block, eps) for block in flat]).mean())


def measure_vaa(net: ParallelNet, data: Split, cfg: VaaConfig, gen: torch.Generator,
                device: torch.device) -> float:
    """The exact VAA as the reference measures it: ``cfg.estimates`` estimates, each on
    ``cfg.samples`` training inputs drawn at random, ``cfg.steps`` stabilisation steps, averaged."""
    total = cfg.estimates * cfg.samples
    idx = torch.randint(len(data), (total,), generator=gen)
    x = data.batch(idx.to(data.y.device))[0].to(device)  # (T, E*n, I)
    return network_vaa(net, x, gen, steps=cfg.steps, eps=cfg.eps, estimates=cfg.estimates)
