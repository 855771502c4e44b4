"""benchmarks/reference.py, the speed yardstick: it runs every cell and prints what
benchmarks/compare.py reads, and its cells and VAA* compute the project's functions."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from pipeline.core import multistability
from pipeline.core.scans import reference as scans

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "reference.py"
TINY = ["--hidden", "4", "--seq-len", "5", "--batch", "3", "--layers", "2", "--reps", "1", "--threads", "1"]
KEYS = {"warmup_step_ms", "train_step_ms"}  # what compare.py reads from each run's JSON line


def _load():
    spec = importlib.util.spec_from_file_location("benchmarks_reference", SCRIPT)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


ref = _load()


@pytest.fixture
def process_state():
    """main seeds torch's global RNG and sets its thread count: both restored afterwards."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng():
        yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cell", ref.CELLS)
def test_prints_one_json_line_with_the_keys_compare_reads(cell: str, process_state: None,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert ref.main(["--cell", cell, *TINY]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert KEYS <= rec.keys() and all(rec[k] > 0 for k in KEYS)
    assert (rec["cell"], rec["hidden"], rec["seq_len"], rec["batch"], rec["layers"]) == (cell, 4, 5, 3, 2)


def test_imports_nothing_of_the_project() -> None:
    """It stands for the published code: torch, the standard library and its sibling flags only."""
    tree = ast.parse(SCRIPT.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    roots = {name.split(".")[0] for name in names}
    assert roots - sys.stdlib_module_names == {"torch", "flags"}
    assert "shared" not in SCRIPT.read_text()


def test_bad_input_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert ref.main(["--reps", "0"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --reps must be >= 1 but got 0"]


def _inputs(cell: torch.nn.Module, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(T, B, I)`` input and a ``(B, H)`` state, drawn from ``seed``; the cell's weights are
    moved off their initial values (BRC vectors 1, biases 0) so that every weight matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    x = torch.randn(7, 3, cell.input_size, generator=gen)
    h0 = torch.randn(3, cell.hidden_size, generator=gen)
    return x, h0


def test_brc_loop_equals_the_project_reference_scan() -> None:
    torch.manual_seed(0)
    cell = ref.StepwiseCell("brc", 2, 5)
    x, h0 = _inputs(cell)
    ours, (last,) = cell(x, (h0,))
    proj = [x @ getattr(cell, f"in_{g}").T + getattr(cell, f"bias_{g}") for g in "cah"]
    expected = scans.brc_scan_reference(*proj, cell.rec_c, cell.rec_a, h0)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(last, expected[-1])


def test_nbrc_and_mgu_loops_equal_the_project_reference_scans() -> None:
    torch.manual_seed(1)
    nbrc = ref.StepwiseCell("nbrc", 2, 5)
    x, h0 = _inputs(nbrc, seed=1)
    proj = [x @ getattr(nbrc, f"in_{g}").T + getattr(nbrc, f"bias_{g}") for g in "cah"]
    torch.testing.assert_close(nbrc(x, (h0,))[0],
                               scans.nbrc_scan_reference(*proj, nbrc.rec_c, nbrc.rec_a, h0))
    mgu = ref.StepwiseCell("mgu", 2, 5)
    x, h0 = _inputs(mgu, seed=2)
    proj = [x @ getattr(mgu, f"in_{g}").T + getattr(mgu, f"bias_{g}") for g in "fn"]
    torch.testing.assert_close(mgu(x, (h0,))[0],
                               scans.mgu_scan_reference(*proj, mgu.rec_f, mgu.rec_n, h0))


def test_gru_and_lstm_equal_the_project_reference_scans() -> None:
    torch.manual_seed(2)
    gru = ref.LibraryCell("gru", 2, 5)
    x, h0 = _inputs(gru, seed=3)
    rnn = gru.rnn
    xp = (x @ rnn.weight_ih_l0.T + rnn.bias_ih_l0).unsqueeze(1)  # (T, 1, B, 3H), gates r, z, n
    expected = scans.gru_scan_reference(xp, rnn.weight_hh_l0.T[None], rnn.bias_hh_l0[None], h0[None])
    torch.testing.assert_close(gru(x, (h0,))[0], expected[:, 0])

    lstm = ref.LibraryCell("lstm", 2, 5)
    x, h0 = _inputs(lstm, seed=4)
    c0 = torch.randn(h0.shape, generator=torch.Generator().manual_seed(5))
    rnn = lstm.rnn
    order = torch.cat([torch.arange(5) + 5 * k for k in (3, 0, 1, 2)])  # torch's i, f, g, o -> o, i, f, g
    w_ih, w_hh = rnn.weight_ih_l0[order], rnn.weight_hh_l0[order]
    xp = (x @ w_ih.T + (rnn.bias_ih_l0 + rnn.bias_hh_l0)[order]).unsqueeze(1)
    hs, cs = scans.lstm_scan_reference(xp, w_hh.T[None], h0[None], c0[None])
    out, (h, c) = lstm(x, (h0, c0))
    torch.testing.assert_close(out, hs[:, 0])
    torch.testing.assert_close(c, cs[-1, 0])


def test_vaa_star_loop_equals_the_project_vaa_star() -> None:
    gen = torch.Generator().manual_seed(6)
    states = torch.randn(6, 4, generator=gen)
    states = torch.cat([states, states[:2]])  # two coinciding pairs (d = 0 off the diagonal)
    states.requires_grad_(True)
    ours = ref.vaa_star(states)
    torch.testing.assert_close(ours, multistability.vaa_star(states))
    ours.backward()
    assert torch.isfinite(states.grad).all()
