"""CUDA against CPU, end to end: the paths a GPU takes (cuDNN GRU/LSTM, the grouped scans for every
cell, the stabilisation of all layers in one run of the longest S, seed replicas grouped) give the
CPU's values, gradients and Adam updates to float32 tolerance. Marked ``gpu``; run deliberately
with ``python -m pytest -m gpu`` on a machine with CUDA (benchmarks/gpu_session.sh does)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pipeline.core.config import CELLS, ModelConfig, WarmupConfig
from pipeline.core.model import build_model, forward_group
from pipeline.core.tasks import Split
from pipeline.core.trial import run_trial
from tests.helpers import tiny

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
# float32 on two devices: cuDNN/cuBLAS reduce in another order than oneDNN/our CPU scans.
TOL = {"rtol": 2e-3, "atol": 2e-5}


@pytest.fixture(autouse=True)
def _exact_matmuls():
    """TF32 would make the CUDA side 1e-3-relative in every matmul; compare in true float32."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def replicas(cell: str, warm_width: int, n: int = 3, hidden: int = 24) -> list[torch.nn.Module]:
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(build_model(ModelConfig(cell=cell, hidden_size=hidden, num_layers=2), 2, 1, warm_width))
    return out


def params(nets) -> list[torch.Tensor]:
    return [p for n in nets for p in n.parameters()]


def assert_close_in_norm(a: torch.Tensor, b: torch.Tensor, rel: float = 2e-3) -> None:
    """||a - b|| <= rel ||b|| (+ a float32 floor): for gradients, where a few elements near zero
    may differ relatively much while the tensor as a whole agrees to rounding."""
    err, ref = (a.double() - b.double()).norm().item(), b.double().norm().item()
    assert err <= rel * ref + 1e-6, f"relative error {err / max(ref, 1e-30):.2e} (norm {ref:.3e})"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("warm_width", [24, 10])
def test_forward_and_gradients_on_cuda_match_cpu(cell: str, warm_width: int) -> None:
    cpu = replicas(cell, warm_width)
    gpu = [copy.deepcopy(n).to(CUDA) for n in cpu]
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(40, 8, 2, generator=gen) for _ in cpu]
    outs, grads = [], []
    for dev, nets in ((CUDA, gpu), (CPU, cpu)):
        o = forward_group(nets, [x.to(dev) for x in xs], 3)
        grads.append([v.cpu() for v in torch.autograd.grad(sum((v ** 2).sum() for v in o), params(nets))])
        outs.append([v.detach().cpu() for v in o])
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(*grads, strict=True):
        assert_close_in_norm(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_warmup_steps_on_cuda_match_cpu(cell: str) -> None:
    """Grouped warm-up steps of three replicas (per-replica S, prefixes and inputs drawn from CPU
    generators, so both devices see the same draws). The first step's losses, per-layer VAA* and
    gradients agree to rounding; then, with Adam at lr 1e-2, the losses of the next two steps stay
    close (Adam's first steps move each weight by about lr whatever the gradient's size, so a weight
    whose gradient is rounding noise may move either way: weights are not compared element-wise)."""
    from pipeline.core.warmup import warmup_step_group

    cpu = replicas(cell, 24)
    gpu = [copy.deepcopy(n).to(CUDA) for n in cpu]
    cfg = WarmupConfig(batch_size=16)
    gen = torch.Generator().manual_seed(2)
    data = [Split(torch.randn(30, 40, 2, generator=gen), torch.zeros(1, 40)) for _ in cpu]
    runs, first_grads = [], []
    for dev, nets in ((CUDA, gpu), (CPU, cpu)):
        ds = [Split(d.x.to(dev), d.y.to(dev)) for d in data]
        steps = []
        for step in range(3):
            # lr 0 at the first step: the gradients are left in .grad and the weights unchanged
            opts = [torch.optim.Adam(n.parameters(), lr=cfg.lr if step else 0.0) for n in nets]
            out = warmup_step_group(nets, opts, ds, step + 5, cfg,
                                    [torch.Generator().manual_seed(100 * step + r) for r in range(len(nets))],
                                    dev)
            steps.append([(float(loss), v.cpu()) for loss, v in out])
            if step == 0:
                first_grads.append([p.grad.cpu() for p in params(nets) if p.grad is not None])
        runs.append(steps)
    for (lg, vg), (lc, vc) in zip(runs[0][0], runs[1][0], strict=True):
        assert math.isclose(lg, lc, rel_tol=2e-3, abs_tol=1e-6), (lg, lc)
        torch.testing.assert_close(vg, vc, rtol=2e-3, atol=1e-5)
    assert len(first_grads[0]) == len(first_grads[1]) > 0
    for a, b in zip(*first_grads, strict=True):
        assert_close_in_norm(a, b)
    for step in (1, 2):
        for (lg, _), (lc, _) in zip(runs[0][step], runs[1][step], strict=True):
            assert math.isclose(lg, lc, rel_tol=5e-2, abs_tol=1e-4), (step, lg, lc)


@pytest.mark.parametrize("cell", ["gru", "lstm", "brc"])
def test_trial_on_cuda_completes_and_tracks_cpu(cell: str) -> None:
    """A whole trial with replicas on CUDA: completes, its initial VAA* equals the CPU trial's, and
    its final loss stays near the CPU trial's (only float rounding separates them)."""
    conf = tiny(seed=1, replicas=2, **{"model.cell": cell})
    rec_cpu = run_trial({**conf, "device": "cpu"})
    rec_gpu = run_trial({**conf, "device": "cuda"})
    assert rec_gpu["status"] == "completed", rec_gpu["error"]
    assert len(rec_gpu["per_seed"]) == 2
    assert math.isclose(rec_gpu["vaa_star_init"], rec_cpu["vaa_star_init"], rel_tol=1e-2)
    assert math.isclose(rec_gpu["test_loss"], rec_cpu["test_loss"], rel_tol=5e-2)


def test_bench_cli_on_cuda_reports_the_card(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pipeline.bench import main

    assert main(["--cell", "brc", "--hidden", "16", "--seq-len", "20", "--batch", "4", "--reps", "2",
                 "--replicas", "2", "--device", "cuda", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"].startswith("cuda") and out["gpu"] == torch.cuda.get_device_name()
    assert out["warmup_step_ms"] > 0 and out["train_step_ms"] > 0


def test_host_draws_reach_cuda_unchanged() -> None:
    from pipeline.core.device import to_device

    idx = torch.randint(1000, (64,), generator=torch.Generator().manual_seed(0))
    on_gpu = to_device(idx, CUDA)
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), idx)
    assert to_device(idx, CPU) is idx
