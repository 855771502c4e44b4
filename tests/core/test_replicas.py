"""Seed replicas run grouped: the grouped passes equal running each network alone (values,
gradients, draws), for every cell and for parallel networks with warm and cold parts."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.core.cells import run_group
from pipeline.core.config import CELLS, ModelConfig, WarmupConfig
from pipeline.core.model import build_model, forward_group
from pipeline.core.multistability import (
    layer_vaa_star,
    layer_vaa_star_group,
    sample_states,
    sample_states_group,
)
from pipeline.core.scans import native
from pipeline.core.tasks import Split
from pipeline.core.warmup import warmup_step, warmup_step_group

TOL = {"rtol": 1e-4, "atol": 1e-6}


def nets(cell: str, warm_width: int, n: int = 3, hidden: int = 12):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(build_model(ModelConfig(cell=cell, hidden_size=hidden, num_layers=2), 2, 1, warm_width))
    return out


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("warm_width", [12, 5])
def test_forward_group_equals_each_alone(cell: str, warm_width: int) -> None:
    group = nets(cell, warm_width)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(15, 4, 2, generator=gen) for _ in group]
    outs = forward_group(group, xs, out_steps=3)
    loss = sum((o ** 2).sum() for o in outs)
    grads = torch.autograd.grad(loss, [p for n in group for p in n.parameters()])
    alone = [n(x, 3) for n, x in zip(group, xs, strict=True)]
    ref = torch.autograd.grad(sum((o ** 2).sum() for o in alone), [p for n in group for p in n.parameters()])
    for a, b in zip(outs, alone, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("one_run", [False, True])
def test_states_and_vaa_star_groups_equal_each_alone(cell: str, one_run: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Different prefix lengths and stabilisation lengths per network: grouped per length (CPU)
    or in one run of the longest, each read at its own S (GPU policy, forced here)."""
    import pipeline.core.multistability as ms

    monkeypatch.setattr(ms, "_one_longest_run", lambda device: one_run)
    group = nets(cell, 7)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(15, 6, 2, generator=gen) for _ in group]
    lengths = [torch.randint(1, 16, (6,), generator=gen) for _ in group]
    steps = [3, 40, 17]
    states = sample_states_group(group, xs, lengths)
    gens = [torch.Generator().manual_seed(9 + r) for r in range(3)]
    v_group = layer_vaa_star_group(group, states, steps, gens, 1e-4)
    for r, net in enumerate(group):
        alone = sample_states(net, xs[r], lengths[r])
        for s_g, s_a in zip(states[r], alone, strict=True):
            for a, b in zip(s_g, s_a, strict=True):
                torch.testing.assert_close(a, b, **TOL)
        v_alone = layer_vaa_star(net, alone, steps[r], torch.Generator().manual_seed(9 + r), 1e-4)
        torch.testing.assert_close(v_group[r], v_alone, **TOL)


@pytest.mark.parametrize("cell", ["gru", "lstm", "nbrc"])
def test_warmup_step_group_equals_each_alone(cell: str) -> None:
    group = nets(cell, 12)
    twins = copy.deepcopy(group)
    cfg = WarmupConfig(batch_size=8)
    gen = torch.Generator().manual_seed(2)
    datas = [Split(torch.randn(12, 20, 2, generator=gen), torch.zeros(1, 20)) for _ in group]
    opts = [torch.optim.Adam(n.parameters(), lr=cfg.lr) for n in group]
    twin_opts = [torch.optim.Adam(n.parameters(), lr=cfg.lr) for n in twins]
    dev = torch.device("cpu")
    for step in range(3):
        out = warmup_step_group(group, opts, datas, step + 20, cfg,
                                [torch.Generator().manual_seed(100 * step + r) for r in range(3)], dev)
        for r, twin in enumerate(twins):
            loss, v = warmup_step(twin, twin_opts[r], datas[r], step + 20, cfg,
                                  torch.Generator().manual_seed(100 * step + r), dev)
            torch.testing.assert_close(out[r][0], loss, **TOL)
            torch.testing.assert_close(out[r][1], v, **TOL)
    for net, twin in zip(group, twins, strict=True):
        for p, q in zip(net.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "lstm", "chrono", "brc", "nbrc", "mgu"])
def test_grouped_paths_used_on_gpus(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU the cells run one at a time (measured faster there with the native kernels; without
    them, all but the GRU); their grouped paths (used on GPUs) are forced here and must give the
    same states, outputs and gradients."""
    group = nets(cell, 7)
    cls = type(group[0].layers[0].warm)
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(15, 4, 2, generator=gen) for _ in group]
    lengths = [torch.randint(1, 16, (4,), generator=gen) for _ in group]
    alone_states = [sample_states(n, x, ln) for n, x, ln in zip(group, xs, lengths, strict=True)]
    alone_out = [n(x, 2) for n, x in zip(group, xs, strict=True)]
    monkeypatch.setattr(cls, "groups_well", classmethod(lambda cls, device: True))
    states = sample_states_group(group, xs, lengths)
    outs = forward_group(group, xs, 2)
    for got, want in zip(states, alone_states, strict=True):
        for s_g, s_a in zip(got, want, strict=True):
            for a, b in zip(s_g, s_a, strict=True):
                torch.testing.assert_close(a, b, **TOL)
    params = [p for n in group for p in n.parameters()]
    g1 = torch.autograd.grad(sum(o.sum() for o in outs) + sum(s[-1].sum() for st in states for s in st),
                             params)
    g2 = torch.autograd.grad(sum(o.sum() for o in alone_out)
                             + sum(s[-1].sum() for st in alone_states for s in st), params)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    import pipeline.core.multistability as ms

    monkeypatch.setattr(ms, "_one_longest_run", lambda device: True)
    steps = [5, 30, 12]
    v_group = layer_vaa_star_group(group, states, steps, [torch.Generator().manual_seed(r) for r in range(3)],
                                   1e-4)
    monkeypatch.setattr(cls, "groups_well", classmethod(lambda cls, device: False))
    for r, net in enumerate(group):
        v_alone = layer_vaa_star(net, alone_states[r], steps[r], torch.Generator().manual_seed(r), 1e-4)
        torch.testing.assert_close(v_group[r], v_alone, **TOL)


def test_a_nan_network_does_not_leak_into_the_others() -> None:
    group = nets("gru", 12)
    with torch.no_grad():
        next(group[1].parameters()).fill_(float("nan"))
    xs = [torch.randn(10, 4, 2) for _ in group]
    outs = forward_group(group, xs)
    assert torch.isnan(outs[1]).all()
    assert torch.isfinite(outs[0]).all() and torch.isfinite(outs[2]).all()
    torch.stack([o.sum() for o in outs]).sum().backward()
    for r in (0, 2):
        assert all(torch.isfinite(p.grad).all() for p in group[r].parameters())


def test_run_group_falls_back_for_mixed_cells() -> None:
    torch.manual_seed(0)
    a, b = nets("gru", 12, n=1)[0].layers[0].warm, nets("brc", 12, n=1)[0].layers[0].warm
    xs = [torch.randn(5, 3, 2), torch.randn(5, 3, 2)]
    out = run_group([a, b], xs)
    torch.testing.assert_close(out[0][0], a.forward_states(xs[0])[0])
    torch.testing.assert_close(out[1][0], b.forward_states(xs[1])[0])


@pytest.mark.parametrize("gpu_policy", [False, True])
def test_no_host_reads_per_time_step(gpu_policy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """What would be a host synchronisation on a GPU (reading a tensor's value into Python) happens
    a fixed number of times per warm-up or train step, never per time step: the counts are the
    same for T = 8 and T = 40 and for any S. Both device policies (grouped scans and one run of
    the longest S, as on GPUs; or not, as on CPU) are exercised."""
    import collections

    import pipeline.core.cells as cells
    import pipeline.core.multistability as ms

    if gpu_policy:  # and the torch code, which is what runs on GPUs
        monkeypatch.setenv(native.ENV_SWITCH, "0")
        monkeypatch.setattr(ms, "_one_longest_run", lambda device: True)
        monkeypatch.setattr(cells.Cell, "groups_well",
                            classmethod(lambda cls, device: hasattr(cls, "group_states")))
    reads: collections.Counter[str] = collections.Counter()
    for name in ("__bool__", "item", "tolist", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    cfg = WarmupConfig(batch_size=6)
    for cell in CELLS:
        per_T = []
        for T, step in ((8, 3), (40, 20)):  # S ~ U{1..31} then U{1..200}
            group = nets(cell, 7, n=2)
            gen = torch.Generator().manual_seed(T)
            datas = [Split(torch.randn(T, 10, 2, generator=gen), torch.zeros(1, 10, 1)) for _ in group]
            opts = [torch.optim.Adam(n.parameters(), lr=cfg.lr) for n in group]
            reads.clear()
            warmup_step_group(group, opts, datas, step, cfg,
                              [torch.Generator().manual_seed(r) for r in range(2)], torch.device("cpu"))
            outs = forward_group(group, [d.x for d in datas], 1)
            torch.stack([o.sum() for o in outs]).sum().backward()
            per_T.append(dict(reads))
        assert per_T[0] == per_T[1], (cell, per_T)
        assert sum(per_T[0].values()) < 60, (cell, per_T[0])
