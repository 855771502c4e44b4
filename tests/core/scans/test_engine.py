"""The shared scan machinery: buffer helpers and the one autograd path."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.scans import engine


@pytest.mark.parametrize("dim", [1, 2])
def test_gather_keeps_expanded_inputs_unmaterialised(dim: int) -> None:
    a = torch.randn(1, 3, 4).expand(50, 3, 4)
    b = torch.randn(1, 1, 4).expand(50, 3, 4)
    expected = torch.stack([a, 2.0 * b], dim=dim)
    stacked, owned = engine.gather([a, b], [1.0, 2.0], dim=dim)
    assert stacked.stride(0) == 0 and not owned
    torch.testing.assert_close(stacked, expected)
    stacked, owned = engine.gather([a.contiguous(), b], [1.0, 2.0], dim=dim)
    assert owned
    torch.testing.assert_close(stacked, expected)
