"""The reference implementation's behaviours, each the default and each with its documented other
reading as an option, against hand computations: chrono's two independent draws, the warm-up's
minibatches (all training inputs, passes without replacement). MNIST's permutation, rows and
padding are in ``test_tasks.py``."""

from __future__ import annotations

import math

import torch

from pipeline.core.cells import Chrono
from pipeline.core.config import TrialConfig
from pipeline.core.tasks import build_task, pooled
from pipeline.core.warmup import Minibatches


def test_chrono_draws_u_again_for_the_second_bias_vector_by_default() -> None:
    H, t_max = 64, 600.0
    torch.manual_seed(5)
    cell = Chrono(1, H, t_max=t_max)
    torch.manual_seed(5)
    Chrono.__mro__[1](1, H)  # the same LSTM weights consume the same draws first...
    u1 = torch.empty(H).uniform_(1.0, t_max - 1.0)  # ...then u for b_ih, then again for b_hh
    u2 = torch.empty(H).uniform_(1.0, t_max - 1.0)
    b_ih, b_hh = cell.rnn.bias_ih_l0.detach(), cell.rnn.bias_hh_l0.detach()
    torch.testing.assert_close(b_ih[H:2 * H], torch.log(u1))
    torch.testing.assert_close(b_ih[0:H], -torch.log(u1))
    torch.testing.assert_close(b_hh[H:2 * H], torch.log(u2))
    torch.testing.assert_close(b_hh[0:H], -torch.log(u2))
    assert torch.all(b_ih[2 * H:] == 0) and torch.all(b_hh[2 * H:] == 0)
    shared = Chrono(1, H, t_max=t_max, draws="shared")  # the option: one u in both
    torch.testing.assert_close(shared.rnn.bias_ih_l0, shared.rnn.bias_hh_l0)
    single = Chrono(1, H, t_max=t_max, double=False)
    assert torch.all(single.rnn.bias_hh_l0 == 0)


def test_chrono_effective_forget_bias_spread_matches_the_hand_computation() -> None:
    # log u, u ~ U[1, m]: E = (m ln m - m + 1) / (m - 1), E[(log u)^2] =
    # (m (ln m)^2 - 2 m ln m + 2 m - 2) / (m - 1); two independent draws add their variances.
    m = 599.0
    mean = (m * math.log(m) - m + 1) / (m - 1)
    second = (m * math.log(m) ** 2 - 2 * m * math.log(m) + 2 * m - 2) / (m - 1)
    sd_one = math.sqrt(second - mean ** 2)
    torch.manual_seed(0)
    H = 2000  # the sample sd is then within 0.08 of its value (3.5 standard errors)
    two = Chrono(1, H)
    eff = (two.rnn.bias_ih_l0 + two.rnn.bias_hh_l0)[H:2 * H].detach().double()
    assert abs(float(eff.std()) - math.sqrt(2) * sd_one) < 0.08  # about 1.4
    one = Chrono(1, H, draws="shared")
    eff1 = (one.rnn.bias_ih_l0 + one.rnn.bias_hh_l0)[H:2 * H].detach().double()
    assert abs(float(eff1.std()) - 2 * sd_one) < 0.1  # about 1.9


def test_warmup_minibatches_are_passes_without_replacement() -> None:
    gen = torch.Generator().manual_seed(1)
    batches = Minibatches(10, 4, gen)
    drawn = [batches.next() for _ in range(6)]
    assert [len(b) for b in drawn] == [4, 4, 2, 4, 4, 2]  # the last batch of a pass is smaller
    by_hand = torch.Generator().manual_seed(1)
    first, second = torch.randperm(10, generator=by_hand), torch.randperm(10, generator=by_hand)
    assert torch.equal(torch.cat(drawn[:3]), first) and torch.equal(torch.cat(drawn[3:]), second)
    again = Minibatches(10, 4, torch.Generator().manual_seed(1), sampling="replacement")
    expect = torch.randint(10, (4,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.next(), expect)  # the option: uniform draws with replacement


def test_the_warmup_pool_is_every_generated_training_input() -> None:
    cfg = TrialConfig.from_dict({"task.name": "copy", "task.seq_len": 5,
                                 "task.train_samples": 50, "task.test_samples": 5})
    task = build_task(cfg, torch.Generator().manual_seed(0))
    pool = pooled(task)
    assert len(pool) == 50 and len(task.train) == 40  # before the 80/20 split
    x, _ = pool.batch(torch.arange(50))
    torch.testing.assert_close(x[:, :40], task.train.x)
    torch.testing.assert_close(x[:, 40:], task.valid.x)
    defaults = TrialConfig()
    assert (defaults.warmup.pool, defaults.warmup.sampling) == ("all", "passes")
    assert (defaults.model.chrono_draws, defaults.task.permutation, defaults.task.rows) == (
        "independent", "reference", "permuted")
