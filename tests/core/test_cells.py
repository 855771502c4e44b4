"""Cell initialisations and the one interface (docs/method.md, "Cells")."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.core.cells import BRC, GRU, LSTM, NBRC, Chrono, make_cell
from pipeline.core.config import CELLS


def test_gru_reference_initialisation() -> None:
    torch.manual_seed(0)
    r = GRU(3, 6).rnn
    assert torch.all(r.bias_ih_l0 == 0) and torch.all(r.bias_hh_l0 == 0)
    for block in r.weight_hh_l0.chunk(3):
        torch.testing.assert_close(block @ block.T, torch.eye(6), atol=1e-5, rtol=0)
    bound = math.sqrt(6 / (3 + 6))  # xavier-uniform per (6 x 3) gate block
    assert r.weight_ih_l0.abs().max() <= bound


@pytest.mark.parametrize("double", [True, False])
def test_chrono_initialisation(double: bool) -> None:
    torch.manual_seed(0)
    r = Chrono(2, 50, t_max=600.0, double=double).rnn
    H = 50
    forget = r.bias_ih_l0[H:2 * H] + r.bias_hh_l0[H:2 * H]
    inp = r.bias_ih_l0[:H] + r.bias_hh_l0[:H]
    k = 2 if double else 1
    torch.testing.assert_close(inp, -forget)
    u = torch.exp(forget / k)
    assert torch.all(u >= 1) and torch.all(u <= 599)
    assert torch.all(r.bias_ih_l0[2 * H:] == 0) and torch.all(r.bias_hh_l0[2 * H:] == 0)


def test_brc_and_nbrc_initialisation() -> None:
    torch.manual_seed(0)
    b = BRC(3, 5)
    assert torch.all(b.w_c == 1) and torch.all(b.w_a == 1) and torch.all(b.bias == 0)
    n = NBRC(3, 5)
    assert n.weight_c.shape == (5, 5) and torch.all(n.bias == 0)


def test_lstm_cell_states_match_a_manual_loop() -> None:
    torch.manual_seed(0)
    cell = LSTM(3, 4)
    x = torch.randn(9, 2, 3)
    h0, c0 = torch.randn(2, 4), torch.randn(2, 4)
    hs, cs = cell.forward_states(x, (h0, c0))
    tc = torch.nn.LSTMCell(3, 4)
    tc.load_state_dict({k.replace("_l0", ""): v for k, v in cell.rnn.state_dict().items()})
    h, c = h0, c0
    for t in range(9):
        h, c = tc(x[t], (h, c))
        torch.testing.assert_close(hs[t], h)
        torch.testing.assert_close(cs[t], c)


@pytest.mark.parametrize("cell", CELLS)
def test_one_interface(cell: str) -> None:
    torch.manual_seed(0)
    c = make_cell(cell, 3, 5)
    x = torch.randn(6, 4, 3)
    y, final = c(x)
    seqs = c.forward_states(x)
    assert y.shape == (6, 4, 5) and len(final) == len(seqs) == c.n_state
    torch.testing.assert_close(y, seqs[0])
    for f, s in zip(final, seqs, strict=True):
        torch.testing.assert_close(f, s[-1])
    # continuing from a state equals running the concatenated sequence
    y1, s1 = c(x[:3])
    y2, _ = c(x[3:], s1)
    torch.testing.assert_close(torch.cat([y1, y2]), y, rtol=1e-5, atol=1e-6)
    # a time-constant (expanded) input gives the same result as its copy
    u = torch.randn(1, 4, 3).expand(6, -1, -1)
    torch.testing.assert_close(c(u)[0], c(u.contiguous())[0])
