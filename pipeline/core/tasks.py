"""Tasks (docs/method.md, "Tasks"): copy-first-input, denoising, and the MNIST family with padding.

Every split is a :class:`Split` whose ``batch(idx)`` gives time-major inputs ``(T, B, D)`` and targets
for the final ``out_steps`` steps: ``(out_steps, B, 1)`` floats for regression, ``(B,)`` class labels
for classification. Synthetic data come from an explicit ``torch.Generator``; MNIST is read from
local files only (IDX, gzipped or not, or ``mnist.npz``); nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from pipeline.core.config import TrialConfig


@dataclass
class Split:
    """One split. Regression: ``x`` is ``(T, N, D)``, ``y`` ``(K, N, 1)``. MNIST: ``x`` holds the raw
    ``(N, 784)`` uint8 images, turned into sequences per batch by ``make_seq``."""

    x: Tensor
    y: Tensor
    make_seq: Callable[[Tensor], Tensor] | None = None

    def __len__(self) -> int:
        return self.y.size(-2) if self.y.dim() == 3 else self.y.size(0)

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs ``(T, B, D)`` and targets of the samples ``idx``."""
        if self.make_seq is not None:
            return self.make_seq(self.x[idx]), self.y[idx]
        return self.x[:, idx], self.y[:, idx]

    def to(self, device: torch.device) -> Split:
        return Split(self.x.to(device), self.y.to(device), self.make_seq)


@dataclass
class Task:
    """A task's splits and the facts the model and loss need."""

    name: str
    train: Split
    valid: Split
    test: Split
    input_size: int
    output_size: int
    out_steps: int
    classification: bool
    seq_len: int

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """MSE over the scored steps, or cross-entropy on the label at the last step."""
        if self.classification:
            return torch.nn.functional.cross_entropy(out[-1], y)
        return torch.nn.functional.mse_loss(out, y)

    def to(self, device: torch.device) -> Task:
        return Task(self.name, self.train.to(device), self.valid.to(device), self.test.to(device),
                    self.input_size, self.output_size, self.out_steps, self.classification,
                    self.seq_len)

    @property
    def nbytes(self) -> int:
        """Bytes of all its splits' tensors."""
        return sum(t.nbytes for s in (self.train, self.valid, self.test) for t in (s.x, s.y))


def on_device(task: Task, device: torch.device, share: float = 0.25) -> Task:
    """The task moved to a CUDA ``device`` when its data take at most ``share`` of the device's
    free memory, else unchanged. On the device every batch is gathered there, with no host-to-device
    copy (each of which synchronises the host with the GPU) in the training loop; data too large
    for that stay on the host and are copied batch by batch."""
    if device.type != "cuda":
        return task
    free, _ = torch.cuda.mem_get_info(device)
    return task.to(device) if task.nbytes <= share * free else task


# ------------------------------------------------------------------------------------- synthetic
def copy_data(n: int, seq_len: int, gen: torch.Generator) -> Split:
    """Copy-first-input: ``x_t ~ N(0, 1)``; target ``x_1`` at the last step."""
    x = torch.randn(seq_len, n, 1, generator=gen)
    return Split(x, x[:1].clone())


def denoising_data(n: int, seq_len: int, pad: int, gen: torch.Generator) -> Split:
    """Denoising: channel 0 is N(0, 1) noise; channel 1 marks 5 distinct positions drawn from the
    first ``T - pad`` steps with 1 and step ``T - 5`` (0-based; the first scored step) with -1. The
    targets are the 5 marked values in time order, scored over the last 5 steps."""
    noise = torch.randn(seq_len, n, generator=gen)  # (T, N)
    pos = torch.rand(n, seq_len - pad, generator=gen).topk(5, dim=1).indices.sort(dim=1).values
    marks = torch.zeros(n, seq_len)
    marks.scatter_(1, pos, 1.0)
    marks[:, seq_len - 5] = -1.0
    x = torch.stack([noise, marks.T], dim=-1)  # (T, N, 2)
    y = noise.T.gather(1, pos).T.unsqueeze(-1)  # (5, N, 1)
    return Split(x, y)


# ------------------------------------------------------------------------------------- MNIST
_IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in .gz)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} bytes of data, found {body.size}")
    return body.reshape(shape)


def load_mnist(data_dir: str | None) -> dict[str, np.ndarray]:
    """MNIST arrays ``train_x (N, 28, 28)``, ``train_y``, ``test_x``, ``test_y`` from local files.

    Raises:
        FileNotFoundError: naming the folder and the files looked for.
    """
    if not data_dir:
        raise FileNotFoundError("MNIST tasks need task.data_dir=PATH with the MNIST IDX files "
                                "(train-images-idx3-ubyte[.gz], ...) or mnist.npz; nothing is downloaded")
    npz = os.path.join(data_dir, "mnist.npz")
    if os.path.isfile(npz):
        try:
            with np.load(npz) as f:
                return {"train_x": f["x_train"], "train_y": f["y_train"],
                        "test_x": f["x_test"], "test_y": f["y_test"]}
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{npz} is not a valid MNIST npz (x_train, y_train, x_test, y_test): "
                             f"{exc}") from exc
    out = {}
    for key, stem in _IDX_NAMES.items():
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
            path = os.path.join(data_dir, name)
            if os.path.isfile(path):
                out[key] = read_idx(path)
                break
        else:
            raise FileNotFoundError(
                f"MNIST file {stem}[.gz] (or mnist.npz) not found in task.data_dir={data_dir!r}; "
                f"nothing is downloaded")
    return out


class MnistSequencer:
    """uint8 images ``(B, 784)`` -> sequences ``(T + P, B, D)`` with pixels ``x/255 - 0.5``: the
    pixels in ``perm`` order (when given), one per step, or for row_mnist 28 per step (the rows
    of the permuted sequence reshaped 28 x 28), then P zero steps."""

    def __init__(self, kind: str, pad: int, perm: Tensor | None) -> None:
        self.kind, self.pad, self.perm = kind, pad, perm

    def __call__(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0 - 0.5  # (B, 784)
        if self.perm is not None:
            x = x[:, self.perm.to(x.device)]
        seq = x.view(-1, 28, 28) if self.kind == "row_mnist" else x.unsqueeze(-1)  # (B, T, D)
        seq = seq.transpose(0, 1)  # (T, B, D)
        if self.pad:
            seq = torch.cat([seq, seq.new_zeros(self.pad, seq.size(1), seq.size(2))], dim=0)
        return seq.contiguous()


def reference_permutation() -> Tensor:
    """The reference code's fixed permutation of the 784 pixel positions (input step t takes pixel
    ``perm[t]`` of the flattened image), shipped with the package."""
    text = resources.files("pipeline.core").joinpath("data/mnist_permutation.txt").read_text()
    perm = torch.tensor([int(v) for v in text.split()], dtype=torch.int64)
    if perm.numel() != 784 or not torch.equal(perm.sort().values, torch.arange(784)):
        raise ValueError("pipeline/core/data/mnist_permutation.txt is not a permutation of 0..783")
    return perm


def mnist_permutation(cfg: TrialConfig) -> Tensor | None:
    """The pixel order of the task: perm_mnist and (with ``task.rows = permuted``) row_mnist use
    the reference's fixed permutation, or a seeded one (``task.permutation = seeded``); seq_mnist
    and image rows none."""
    name = cfg.task.name
    if name == "seq_mnist" or (name == "row_mnist" and cfg.task.rows == "image"):
        return None
    if cfg.task.permutation == "seeded":
        return torch.randperm(784, generator=torch.Generator().manual_seed(cfg.task.perm_seed))
    return reference_permutation()


def mnist_task(cfg: TrialConfig, gen: torch.Generator) -> Task:
    arrays = load_mnist(cfg.task.data_dir)
    name = cfg.task.name
    seqr = MnistSequencer(name, cfg.pad, mnist_permutation(cfg))
    tx = torch.from_numpy(arrays["train_x"].reshape(-1, 784).copy())
    ty = torch.from_numpy(arrays["train_y"].astype(np.int64))
    order = torch.randperm(tx.size(0), generator=gen)[:cfg.task.train_samples]
    n_train = int(0.8 * order.numel())
    ex = torch.from_numpy(arrays["test_x"].reshape(-1, 784).copy())[:cfg.task.test_samples]
    ey = torch.from_numpy(arrays["test_y"].astype(np.int64))[:cfg.task.test_samples]
    steps = (28 if name == "row_mnist" else 784) + cfg.pad
    return Task(name, Split(tx[order[:n_train]], ty[order[:n_train]], seqr),
                Split(tx[order[n_train:]], ty[order[n_train:]], seqr), Split(ex, ey, seqr),
                input_size=28 if name == "row_mnist" else 1, output_size=10, out_steps=1,
                classification=True, seq_len=steps)


def pooled(task: Task) -> Split:
    """Every generated training input, before the 80/20 split (train then valid, in generation
    order for the synthetic tasks): the pool the reference draws warm-up minibatches from."""
    t, v = task.train, task.valid
    if t.make_seq is not None:  # MNIST: raw images, sequenced per batch
        return Split(torch.cat([t.x, v.x]), torch.cat([t.y, v.y]), t.make_seq)
    return Split(torch.cat([t.x, v.x], dim=1), torch.cat([t.y, v.y], dim=1))


def build_task(cfg: TrialConfig, gen: torch.Generator) -> Task:
    """The task of ``cfg`` with its train/valid (80/20 of ``train_samples``) and test splits."""
    name, T = cfg.task.name, cfg.task.seq_len
    if name in ("seq_mnist", "perm_mnist", "row_mnist"):
        return mnist_task(cfg, gen)
    n = cfg.task.train_samples
    if name == "copy":
        full, test = copy_data(n, T, gen), copy_data(cfg.task.test_samples, T, gen)
        dims = (1, 1, 1)
    else:
        full = denoising_data(n, T, cfg.pad, gen)
        test = denoising_data(cfg.task.test_samples, T, cfg.pad, gen)
        dims = (2, 1, 5)
    n_train = int(0.8 * n)
    train = Split(full.x[:, :n_train], full.y[:, :n_train])  # the first 80% of generation order
    valid = Split(full.x[:, n_train:], full.y[:, n_train:])
    return Task(name, train, valid, test, input_size=dims[0], output_size=dims[1],
                out_steps=dims[2], classification=False, seq_len=T)
