"""Tasks: synthetic data, MNIST from local IDX (gzipped or not) and npz files, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.config import TrialConfig
from pipeline.core.tasks import build_task, read_idx

ROOT = Path(__file__).resolve().parents[2]


def cfg(**flat) -> TrialConfig:
    return TrialConfig.from_dict({"task.train_samples": 50, "task.test_samples": 20, **flat})


def test_copy_task_targets_first_input() -> None:
    task = build_task(cfg(**{"task.seq_len": 12}), torch.Generator().manual_seed(0))
    assert (len(task.train), len(task.valid), len(task.test)) == (40, 10, 20)
    x, y = task.train.batch(torch.arange(5))
    assert x.shape == (12, 5, 1) and y.shape == (1, 5, 1)
    torch.testing.assert_close(y[0], x[0])
    assert task.out_steps == 1 and not task.classification


def test_denoising_marks_and_targets() -> None:
    c = cfg(**{"task.name": "denoising", "task.seq_len": 30})
    task = build_task(c, torch.Generator().manual_seed(0))
    x, y = task.train.batch(torch.arange(40))
    assert x.shape == (30, 40, 2) and y.shape == (5, 40, 1)
    marks = x[..., 1]
    assert torch.all((marks == 1).sum(0) == 5)
    assert torch.all(marks[30 - 5] == -1)
    assert torch.all(marks[30 - 5:] != 1)  # marked positions lie in the first T - pad steps
    for b in range(40):
        pos = (marks[:, b] == 1).nonzero().flatten()
        torch.testing.assert_close(y[:, b, 0], x[pos, b, 0])


def _write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def _fake_mnist(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, np.uint8)


@pytest.mark.parametrize("fmt", ["idx", "idx.gz", "npz"])
@pytest.mark.parametrize("name", ["seq_mnist", "perm_mnist", "row_mnist"])
def test_mnist_from_local_files(tmp_path: Path, fmt: str, name: str) -> None:
    (trx, try_), (tex, tey) = _fake_mnist(30, 0), _fake_mnist(12, 1)
    if fmt == "npz":
        np.savez(tmp_path / "mnist.npz", x_train=trx, y_train=try_, x_test=tex, y_test=tey)
    else:
        gz = fmt.endswith("gz")
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", trx, gz)
        _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", try_, gz)
        _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", tex, gz)
        _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", tey, gz)
    c = cfg(**{"task.name": name, "task.data_dir": str(tmp_path), "task.pad": 7,
               "task.train_samples": 30, "task.test_samples": 12})
    task = build_task(c, torch.Generator().manual_seed(0))
    assert (len(task.train), len(task.valid), len(task.test)) == (24, 6, 12)
    x, y = task.test.batch(torch.arange(3))
    steps, dim = (28, 28) if name == "row_mnist" else (784, 1)
    assert x.shape == (steps + 7, 3, dim) and task.seq_len == steps + 7
    assert torch.all(x[steps:] == 0.0)
    pixels = torch.from_numpy(tex[:3].reshape(3, 784)).float() / 255 - 0.5
    seq = x[:steps].transpose(0, 1).reshape(3, 784)
    if name == "seq_mnist":
        torch.testing.assert_close(seq, pixels)
    else:  # the reference: input step t takes pixel perm[t]; row_mnist's rows are of that order
        perm = [int(v) for v in (ROOT / "pipeline" / "core" / "data" /
                                 "mnist_permutation.txt").read_text().split()]
        by_hand = torch.stack([pixels[:, p] for p in perm], dim=1)
        torch.testing.assert_close(seq, by_hand, rtol=0, atol=0)
    assert torch.equal(y, torch.from_numpy(tey[:3].astype(np.int64)))
    if name == "seq_mnist":
        return
    # the other readings, each an option: image rows; a seeded permutation
    other = {"task.rows": "image"} if name == "row_mnist" else {"task.permutation": "seeded",
                                                                 "task.perm_seed": 3}
    c2 = cfg(**{"task.name": name, "task.data_dir": str(tmp_path), "task.pad": 7,
                "task.train_samples": 30, "task.test_samples": 12, **other})
    x2, _ = build_task(c2, torch.Generator().manual_seed(0)).test.batch(torch.arange(3))
    seq2 = x2[:steps].transpose(0, 1).reshape(3, 784)
    if name == "row_mnist":
        torch.testing.assert_close(seq2, pixels)  # row r of step r: the image's own row
    else:
        drawn = torch.randperm(784, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(seq2, pixels[:, drawn], rtol=0, atol=0)


def test_mnist_padding_defaults_to_the_reference_s_five(tmp_path: Path) -> None:
    (trx, try_), (tex, tey) = _fake_mnist(10, 0), _fake_mnist(4, 1)
    np.savez(tmp_path / "mnist.npz", x_train=trx, y_train=try_, x_test=tex, y_test=tey)
    c = cfg(**{"task.name": "seq_mnist", "task.data_dir": str(tmp_path),
               "task.train_samples": 10, "task.test_samples": 4})
    assert c.pad == 5
    x, _ = build_task(c, torch.Generator().manual_seed(0)).test.batch(torch.arange(2))
    assert x.shape[0] == 784 + 5 and torch.all(x[784:] == 0.0)
    assert cfg(**{"task.name": "copy"}).pad == 0  # the copy task has no padding


def test_the_shipped_permutation_is_the_reference_s(tmp_path: Path) -> None:
    from pipeline.core.tasks import reference_permutation
    shipped = reference_permutation()
    reference = ROOT.parent / "shared" / "data" / "mnist_permutation.txt"
    if reference.exists():
        assert shipped.tolist() == [int(v) for v in reference.read_text().split()]
    assert sorted(shipped.tolist()) == list(range(784))


def test_mnist_missing_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*nothing is downloaded"):
        build_task(cfg(**{"task.name": "seq_mnist", "task.data_dir": str(tmp_path)}),
                   torch.Generator())
    with pytest.raises(FileNotFoundError, match="task.data_dir"):
        build_task(cfg(**{"task.name": "seq_mnist"}), torch.Generator())


def test_corrupt_idx_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "bad"
    p.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(ValueError, match="expected 9 bytes"):
        read_idx(str(p))


def test_task_bytes_and_on_device_keeps_cpu_tasks() -> None:
    from pipeline.core.tasks import on_device

    task = build_task(TrialConfig.from_dict({"task.seq_len": 7, "task.train_samples": 50,
                                             "task.test_samples": 20}), torch.Generator().manual_seed(0))
    # copy task: x (T, N, 1) and y (1, N, 1) float32 for 40 train + 10 valid + 20 test samples
    assert task.nbytes == 4 * (7 + 1) * (40 + 10 + 20)
    assert on_device(task, torch.device("cpu")) is task


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_device_moves_a_task_that_fits_to_cuda() -> None:
    from pipeline.core.tasks import on_device

    task = build_task(TrialConfig.from_dict({"task.seq_len": 7, "task.train_samples": 50}),
                      torch.Generator().manual_seed(0))
    moved = on_device(task, torch.device("cuda"))
    assert moved.train.x.is_cuda and moved.test.y.is_cuda
    x, y = moved.train.batch(torch.arange(5, device="cuda"))
    assert torch.equal(x.cpu(), task.train.x[:, :5]) and torch.equal(y.cpu(), task.train.y[:, :5])
    assert on_device(task, torch.device("cuda"), share=0.0) is task  # too large: stays on the host
