"""VAA and VAA* against a naive loop, and batched (and ragged) hidden-state sampling against prefix
runs."""

from __future__ import annotations

import pytest
import torch

from pipeline.core import multistability
from pipeline.core.config import CELLS, ModelConfig
from pipeline.core.model import build_model
from pipeline.core.multistability import prefix_segments, sample_states, vaa, vaa_star
from pipeline.core.scans import native


def naive_vaa(h: torch.Tensor, eps: float) -> float:
    n = h.size(0)
    return sum(1.0 / int((torch.norm(h - h[i], dim=1) < eps).sum()) for i in range(n)) / n


def naive_vaa_star(h: torch.Tensor, eps: float) -> torch.Tensor:
    n, t, v = h.size(0), torch.tanh(h), torch.zeros((), dtype=h.dtype)
    for i in range(n):
        d = torch.norm(t - t[i], dim=1)
        v = v + (1.0 / (1.0 - torch.relu(d - eps) / (d + 1e-6)).sum()) / n
    return v


def clustered(n: int, k: int, d: int, spread: float, gen: torch.Generator) -> torch.Tensor:
    centres = torch.randn(k, d, generator=gen, dtype=torch.float64)
    labels = torch.arange(n) % k
    return centres[labels] + spread * torch.randn(n, d, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("n", [8, 26, 33, 64])
@pytest.mark.parametrize("kind", ["random", "clustered", "near_eps"])
def test_vaa_and_vaa_star_match_naive_loop(n: int, kind: str) -> None:
    gen = torch.Generator().manual_seed(n)
    if kind == "random":
        h = torch.randn(n, 12, generator=gen, dtype=torch.float64)
    elif kind == "clustered":
        h = clustered(n, 5, 12, 1e-6, gen)
    else:  # distances straddling eps
        h = clustered(n, 3, 4, 6e-5, gen)
    for eps in (1e-4, 1e-2):
        assert float(vaa(h, eps)) == pytest.approx(naive_vaa(h, eps), abs=1e-6)
        assert float(vaa_star(h, eps)) == pytest.approx(float(naive_vaa_star(h, eps)), abs=1e-6)


def test_vaa_counts_well_separated_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    for n, k in [(10, 1), (32, 4), (64, 7), (50, 50)]:
        h = clustered(n, k, 16, 1e-7, gen)
        assert float(vaa(h)) == pytest.approx(k / n, abs=1e-12)
        assert float(vaa_star(h)) == pytest.approx(k / n, rel=5e-3)  # a soft count


def test_vaa_star_has_finite_gradients_on_coincident_states() -> None:
    h = torch.zeros(40, 8, dtype=torch.float64)
    h[20:] = 1.0  # two groups of exactly equal states (d = 0), more than 25 rows
    h.requires_grad_(True)
    v = vaa_star(h)
    v.backward()
    assert float(v.detach()) == pytest.approx(2 / 40, rel=1e-3)
    assert torch.isfinite(h.grad).all()


def test_vaa_star_float32_above_25_rows_is_exact_on_diagonal() -> None:
    """The cdist matmul path would put ~3e-3 on the diagonal and give VAA* ~ 11."""
    h = torch.randn(64, 256, generator=torch.Generator().manual_seed(3)) * 3
    assert float(vaa_star(h)) == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("cell", CELLS)
def test_batched_sampling_equals_per_sample_prefix_runs(cell: str) -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(cell=cell, hidden_size=10, num_layers=2), 3, 1, warm_width=6)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(15, 7, 3, generator=gen)
    lengths = torch.randint(1, 16, (7,), generator=gen)
    lengths[0], lengths[1] = 1, 15
    batched = sample_states(net, x, lengths)
    for i in range(7):
        _, finals = net.run(x[: int(lengths[i]), i : i + 1])
        for layer in range(2):
            assert len(finals[layer]) == (2 if cell in ("lstm", "chrono") else 1)
            for comp in range(len(finals[layer])):
                torch.testing.assert_close(batched[layer][comp][i : i + 1], finals[layer][comp],
                                           rtol=1e-5, atol=1e-6)


def test_prefix_segments_examples_and_errors() -> None:
    assert prefix_segments([100, 90, 80, 70, 60, 50, 40, 30, 20, 10], rows=4) == [
        (0, 20, 10), (20, 60, 8), (60, 100, 4)]
    assert prefix_segments([5, 5, 5], rows=8) == [(0, 5, 3)]
    assert prefix_segments([1]) == [(0, 1, 1)]
    with pytest.raises(ValueError, match="descending"):
        prefix_segments([3, 5])
    with pytest.raises(ValueError, match=">= 1"):
        prefix_segments([3, 0])


@pytest.mark.parametrize("rows", [1, 4, 16])
def test_prefix_segments_cover_every_needed_step_and_no_more(rows: int) -> None:
    """Segments are contiguous from 0 to the longest prefix; step t runs exactly the first
    min(B, ceil(n_t / rows) rows) rows, n_t = #{c_i > t}: every row up to its own c_i, and a
    step past it only with a longer row of its block."""
    gen = torch.Generator().manual_seed(0)
    for B in (1, 7, 16, 32, 45):
        ls = sorted(torch.randint(1, 60, (B,), generator=gen).tolist(), reverse=True)
        segs = prefix_segments(ls, rows=rows)
        assert segs[0][0] == 0 and segs[-1][1] == ls[0]
        assert all(a[1] == b[0] for a, b in zip(segs, segs[1:], strict=False))
        for t0, t1, w in segs:
            assert t0 < t1
            for t in range(t0, t1):
                alive = sum(v > t for v in ls)
                assert w == min(B, -(-alive // rows) * rows)
        assert sum((t1 - t0) * w for t0, t1, w in segs) <= B * ls[0]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("warm", [10, 6])
def test_ragged_prefix_equals_one_full_pass(cell: str, warm: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """40 rows (segments of 40, 32 and 16 rows), prefix lengths 1..T in random order: the ragged
    pass gives the full pass's states and gradients (parallel network included)."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(cell=cell, hidden_size=10, num_layers=2), 3, 1, warm_width=warm)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 40, 3, generator=gen)
    lengths = torch.randint(1, 31, (40,), generator=gen)
    lengths[5], lengths[17] = 1, 30
    assert len(prefix_segments(sorted(lengths.tolist(), reverse=True))) == 3
    params = [p for layer in net.layers for p in layer.parameters()]
    got = []
    if native.kernels() is None:  # the ragged pass runs with the native kernels only
        pytest.skip("native kernels unavailable")
    for ragged in (True, False):
        monkeypatch.setattr(multistability, "RAGGED_PREFIX", ragged)
        states = sample_states(net, x, lengths)
        loss = sum((s * torch.linspace(-1, 1, s.size(-1))).square().sum() for st in states for s in st)
        got.append((states, torch.autograd.grad(loss, params)))
    (s_r, g_r), (s_f, g_f) = got
    for a, b in zip(s_r, s_f, strict=True):
        for u, v in zip(a, b, strict=True):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
    for u, v in zip(g_r, g_f, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_ragged_prefix_detach_cuts_gradients() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(cell="gru", hidden_size=8, num_layers=2), 1, 1, warm_width=8)
    x = torch.randn(12, 20, 1)
    states = sample_states(net, x, torch.randint(1, 13, (20,)), detach=True)
    assert not any(s.requires_grad for st in states for s in st)
