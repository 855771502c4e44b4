"""Reachable multistability: VAA, its differentiable approximation VAA*, hidden-state sampling and
the exact VAA of a network (docs/method.md, "VAA", "VAA*", "Sampling reachable hidden states").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.core.cells import State, run_group
from pipeline.core.config import VaaConfig
from pipeline.core.device import to_device
from pipeline.core.model import ParallelNet, layer_states_group
from pipeline.core.scans import native
from pipeline.core.tasks import Split

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
    return sample_states_group([net], [x], [lengths], detach=detach)[0]


def sample_states_group(nets: Sequence[ParallelNet], xs: Sequence[Tensor], lengths: Sequence[Tensor],
                        *, detach: bool = False) -> list[list[State]]:
    """:func:`sample_states` for several networks of one configuration (seed replicas), each on its
    own inputs and prefix lengths.

    Where the networks' scans run grouped (GPUs), or on the torch code, each layer of all networks
    is one grouped scan over the whole sequence. With the native CPU kernels (where a step costs in
    proportion to its rows, and where the ragged pass was measured faster) each
    network runs :func:`ragged_prefix`: rows sorted by length, the batch narrowing by blocks of
    ``PREFIX_ROWS`` rows as prefixes end, so that a step past a row's own ``c_i`` is only computed
    while another row of its block still needs it.
    """
    # with the native kernels no cell groups (Cell.groups_well), so each network runs alone anyway
    if RAGGED_PREFIX and native.usable(xs[0]):
        return [ragged_prefix(net, x, n, detach=detach) for net, x, n in zip(nets, xs, lengths, strict=True)]
    picks = [(to_device(n - 1, x.device), torch.arange(x.size(1), device=x.device))
             for n, x in zip(lengths, xs, strict=True)]
    out: list[list[State]] = [[] for _ in nets]
    xs = list(xs)
    for layers in zip(*(net.layers for net in nets), strict=True):
        for r, seqs in enumerate(layer_states_group(layers, xs)):
            idx, cols = picks[r]
            out[r].append(tuple((s[idx, cols].detach() if detach else s[idx, cols]) for s in seqs))
            xs[r] = seqs[0]
    return out


RAGGED_PREFIX = True
"""Whether CPU prefix passes are ragged (:func:`ragged_prefix`); off, one pass over the whole
sequence and batch, as on GPUs (``benchmarks/ab.py --what ragged`` compares the two)."""

PREFIX_ROWS = 16
"""Rows by which the ragged prefix pass narrows its batch: two lanes of the native kernels (8 rows
each, cut by the batch), so that a narrower segment still spreads over two threads (with 8, the
last segment ran on one thread and 2 threads gained little). A constant, not the thread count, so
that the results do not depend on the number of threads."""


def prefix_segments(lengths: Sequence[int], rows: int = PREFIX_ROWS) -> list[tuple[int, int, int]]:
    """The segments of a ragged prefix pass over prefix lengths sorted in descending order.

    Step t runs the first ``min(B, ceil(n_t / rows) * rows)`` rows, where ``n_t`` is the number of
    prefixes longer than t; steps of equal width form one segment ``(t0, t1, width)``, and the
    pass ends at the longest prefix.

    Raises:
        ValueError: lengths not sorted in descending order, or below 1.
    """
    ls = [int(v) for v in lengths]
    if any(a < b for a, b in zip(ls, ls[1:], strict=False)) or (ls and ls[-1] < 1):
        raise ValueError(f"prefix lengths must be >= 1 and sorted in descending order: {ls}")
    B, segs, t0 = len(ls), [], 0
    while ls and t0 < ls[0]:
        alive = sum(1 for v in ls if v > t0)
        blocks = -(-alive // rows)
        width = min(B, blocks * rows)
        # the width drops once at most (blocks - 1) * rows prefixes are longer than t, that is
        # from t = ls[(blocks - 1) * rows] (for the last block, the longest prefix: the end)
        t1 = ls[(blocks - 1) * rows]
        segs.append((t0, t1, width))
        t0 = t1
    return segs


def ragged_prefix(net: ParallelNet, x: Tensor, lengths: Tensor, *, detach: bool = False) -> list[State]:
    """:func:`sample_states` of one network by a ragged pass: the rows sorted by prefix length
    (longest first), each layer run segment by segment (:func:`prefix_segments`) on the rows
    still running, carrying the state over; every row's state is read at its own ``c_i`` and the
    rows are put back in their order. Rows are independent, so this computes the same states as
    one pass over the whole sequence and batch (to float rounding), with about 27% fewer steps
    times rows for uniform ``c_i`` at B = 32 (``PREFIX_ROWS = 16``); gradients flow as through that pass.
    """
    lens = lengths.to("cpu", torch.long)
    order = torch.argsort(lens, descending=True, stable=True)
    sorted_lens = lens[order]
    segs = prefix_segments(sorted_lens.tolist())
    dev_order = to_device(order, x.device)
    inputs = [x[t0:t1].index_select(1, dev_order[:w]) for t0, t1, w in segs]
    # the rows (sorted positions) whose state is read in each segment, and at which local step
    reads = []
    for t0, t1, _ in segs:
        pos = ((sorted_lens > t0) & (sorted_lens <= t1)).nonzero().flatten()
        reads.append((to_device(sorted_lens[pos] - 1 - t0, x.device), to_device(pos, x.device), pos))
    read_pos = torch.cat([pos for *_, pos in reads])
    back = to_device(torch.argsort(order[read_pos]), x.device)  # concatenated reads -> original rows
    out: list[State] = []
    for layer in net.layers:
        state: State | None = None
        picked: list[list[Tensor]] = []
        for k, ((_, _, w), (steps, pos, _)) in enumerate(zip(segs, reads, strict=True)):
            seqs = layer.forward_states(inputs[k], None if state is None else tuple(s[:w] for s in state))
            state = tuple(s[-1] for s in seqs)
            picked.append([s[steps, pos] for s in seqs])
            inputs[k] = seqs[0]  # the next layer's input over this segment
        comps = tuple(torch.cat(parts).index_select(0, back) for parts in zip(*picked, strict=True))
        out.append(tuple(c.detach() for c in comps) if detach else comps)
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
    return layer_vaa_star_group([net], [states], [steps], [gen], eps)[0]


def _one_longest_run(device: torch.device) -> bool:
    """Whether grouped stabilisation runs of different lengths share one run of the longest."""
    return device.type != "cpu"


def layer_vaa_star_group(nets: Sequence[ParallelNet], states: Sequence[list[State]],
                         steps: Sequence[int], gens: Sequence[torch.Generator], eps: float
                         ) -> list[Tensor]:
    """:func:`layer_vaa_star` for several networks of one configuration, each with its own
    states, stabilisation length and generator (drawn from in the same order as alone).

    The stabilisation runs of all layers of all networks are independent, so they run grouped when
    the cell groups well (see :func:`pipeline.core.cells.run_group`): on a GPU as one scan of the
    longest length, each run's state read at its own length; on a CPU one scan per distinct
    length. Otherwise each runs alone.

    Returns:
        One ``(L,)`` tensor of per-layer VAA* per network.
    """
    items = []  # (net index, cell, u, state, steps)
    for r, (net, net_states, gen) in enumerate(zip(nets, states, gens, strict=True)):
        for layer, state in zip(net.layers, net_states, strict=True):
            cell, cols = next(layer.parts())  # the warm part when it exists
            ref = state[0]
            u = to_device(torch.randn(1, 1, layer.input_size, generator=gen), ref.device).to(ref.dtype)
            items.append((r, cell, u, tuple(s[:, cols] for s in state), steps[r]))
    n = items[0][3][0].size(0)
    device = items[0][2].device
    finals: list[State | None] = [None] * len(items)
    if type(items[0][1]).groups_well(device):
        # on a GPU one grouped run of the longest length (steps are launch-bound); on a CPU,
        # where a step costs in proportion to its work, one grouped run per distinct length
        if _one_longest_run(device):
            buckets = [list(range(len(items)))]
        else:
            buckets = [[k for k, it in enumerate(items) if it[4] == length]
                       for length in sorted({it[4] for it in items})]
        for members in buckets:
            longest = max(items[k][4] for k in members)
            seqs = run_group([items[k][1] for k in members],
                             [items[k][2].expand(longest, n, -1) for k in members],
                             [items[k][3] for k in members])
            for k, seq in zip(members, seqs, strict=True):
                finals[k] = tuple(c[items[k][4] - 1] for c in seq)
    else:
        finals = [it[1].final_state(it[2].expand(it[4], n, -1), it[3]) for it in items]
    vals: list[list[Tensor]] = [[] for _ in nets]
    for it, final in zip(items, finals, strict=True):
        vals[it[0]].append(vaa_star(torch.cat(final, dim=-1), eps))
    return [torch.stack(v) for v in vals]


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
    u = to_device(torch.randn(estimates, 1, net.input_size, generator=gen), x.device).to(x.dtype)
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
    x = data.batch(to_device(idx, data.y.device))[0].to(device)  # (T, E*n, I)
    return network_vaa(net, x, gen, steps=cfg.steps, eps=cfg.eps, estimates=cfg.estimates)
