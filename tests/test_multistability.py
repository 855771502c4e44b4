"""VAA and VAA* against a naive loop, and batched hidden-state sampling against prefix runs."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import CELLS, ModelConfig
from pipeline.model import build_model
from pipeline.multistability import sample_states, vaa, vaa_star


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
