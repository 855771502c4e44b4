"""One trial: seed, build task and model, measure VAA, warm up, train, evaluate; return a record.

``run_trial(config, report) -> record`` is the only entry point the sweep uses. ``report(metrics)``
receives every warm-up step's and every epoch's metrics and may raise :class:`StopTrial` (pruning).
A NaN/Inf ends the trial with status ``diverged`` and a full record; it never raises.

CLI (no Ray): ``python -m pipeline.trial --set key=value ... [--device auto|cpu|cuda] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from pipeline.config import TrialConfig, parse_sets
from pipeline.model import build_model
from pipeline.multistability import draw_lengths, layer_vaa_star, measure_vaa, sample_states
from pipeline.outcomes import Diverged, StopTrial
from pipeline.seeding import resolve_device, seed_trial
from pipeline.tasks import build_task
from pipeline.train import Trainer, evaluate, train_loop
from pipeline.warmup import warmup_loop

__all__ = ["RECORD_FIELDS", "StopTrial", "main", "run_trial"]

Report = Callable[[dict[str, Any]], None]

RECORD_FIELDS = ("status", "error", "diverged_phase", "diverged_step", "vaa_init", "vaa_star_init",
                 "vaa_warm", "vaa_star_warm", "best_valid_loss", "best_epoch", "test_loss",
                 "test_accuracy", "epochs_run", "warmup_steps_run", "n_params", "warmup_s",
                 "train_s", "device")
CURVE_FIELDS = ("phase", "step", "train_loss", "valid_loss", "valid_accuracy", "vaa", "vaa_star",
                "elapsed_s")


def _vaa_star_now(net, x, cfg: TrialConfig, gen: torch.Generator) -> float:
    """Mean over layers of VAA* of the warm parts after ``max_stabilization`` steps (no grad)."""
    with torch.no_grad():
        states = sample_states(net, x, draw_lengths(x.size(1), x.size(0), gen))
        return float(layer_vaa_star(net, states, cfg.warmup.max_stabilization, gen,
                                    cfg.warmup.eps).mean())


def _finite_or_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def run_trial(config: TrialConfig | Mapping[str, Any], report: Report | None = None
              ) -> dict[str, Any]:
    """Run one trial and return its flat record.

    Args:
        config: a :class:`TrialConfig` or flat dotted keys.
        report: called with each metric dict (warm-up steps, then epochs); may raise StopTrial.

    Returns:
        Every flat config key, the fields of ``RECORD_FIELDS`` and ``curves`` (a list of dicts
        with ``CURVE_FIELDS``).

    Raises:
        ValueError, FileNotFoundError: bad config or missing data (before anything runs).
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    report = report or (lambda m: None)
    device = resolve_device(cfg.device)
    gen, measure_gen = seed_trial(cfg.seed)
    task = build_task(cfg, gen)
    rec: dict[str, Any] = {**cfg.to_dict(), **dict.fromkeys(RECORD_FIELDS)}
    rec.update(device=str(device), epochs_run=0, warmup_steps_run=0, warmup_s=0.0, train_s=0.0)
    curves: list[dict[str, Any]] = []
    rec["curves"] = curves
    t_start = time.perf_counter()

    def emit(m: dict[str, Any]) -> None:
        m["elapsed_s"] = time.perf_counter() - t_start
        curves.append({k: m.get(k) for k in CURVE_FIELDS})
        report(m)

    try:
        net = build_model(cfg.model, task.input_size, task.output_size, cfg.warm_width).to(device)
        rec["n_params"] = net.n_params
        star_x = task.train.batch(torch.arange(min(cfg.warmup.batch_size, len(task.train))))[0]
        star_x = star_x.to(device)  # (T, n, I): a fixed batch for VAA* before/after warm-up
        rec["vaa_init"] = measure_vaa(net, task.train, cfg.vaa, measure_gen, device)
        rec["vaa_star_init"] = _vaa_star_now(net, star_x, cfg, measure_gen)
        t0 = time.perf_counter()
        if cfg.warms_up:
            for m in warmup_loop(net, task.train, cfg.warmup, gen, device):
                rec["warmup_steps_run"] = m["step"] + 1
                emit(m)
        rec["warmup_s"] = time.perf_counter() - t0
        rec["vaa_warm"] = measure_vaa(net, task.train, cfg.vaa, measure_gen, device)
        rec["vaa_star_warm"] = _vaa_star_now(net, star_x, cfg, measure_gen)
        t0 = time.perf_counter()
        trainer = Trainer(net, task, cfg, gen, measure_gen, device)
        try:
            for m in train_loop(trainer):
                rec["epochs_run"] = m["step"]
                emit(m)
        finally:
            rec["train_s"] = time.perf_counter() - t0
            rec["best_valid_loss"] = _finite_or_none(trainer.best_loss)
            rec["best_epoch"] = trainer.best_epoch or None
        rec["test_loss"], rec["test_accuracy"] = evaluate(net, task, task.test, device)
        rec["status"] = "completed"
    except Diverged as exc:
        rec.update(status="diverged", diverged_phase=exc.phase, diverged_step=exc.step,
                   error=str(exc))
        if exc.phase == "warmup":
            rec["warmup_s"] = time.perf_counter() - t0
    except StopTrial:
        rec["status"] = "pruned"
    except Exception as exc:  # a runtime failure of this trial (e.g. out of memory) is a result
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
    return rec


# ------------------------------------------------------------------------------------------- CLI
def _progress(m: dict[str, Any]) -> None:
    if m["phase"] == "train":
        acc = "" if m["valid_accuracy"] is None else f" valid_acc={m['valid_accuracy']:.4f}"
        vaa = "" if m["vaa"] is None else f" vaa={m['vaa']:.3f}"
        print(f"epoch {m['step']}: train_loss={m['train_loss']:.5f} valid_loss="
              f"{m['valid_loss']:.5f}{acc}{vaa} ({m['elapsed_s']:.1f}s)", file=sys.stderr)
    elif m["step"] % 10 == 0:
        print(f"warm-up step {m['step']}: loss={m['loss']:.5f} vaa*={m['vaa_star']:.3f}",
              file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one trial without Ray. Returns 0, or 2 on bad input."""
    p = argparse.ArgumentParser(prog="python -m pipeline.trial", description=__doc__.split("\n")[0])
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set model.cell=lstm")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--json", action="store_true", help="print the final record as one JSON line")
    p.add_argument("--curves", action="store_true", help="keep the curves in the JSON record")
    args = p.parse_args(argv)
    try:
        flat = parse_sets(args.sets)
        if args.device:
            flat["device"] = args.device
        cfg = TrialConfig.from_dict(flat)
        resolve_device(cfg.device)
        rec = run_trial(cfg, _progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.curves:
        rec.pop("curves")
    print(f"{rec['status']}: test_loss={rec['test_loss']} best_valid_loss={rec['best_valid_loss']} "
          f"vaa_init={rec['vaa_init']} vaa_warm={rec['vaa_warm']}", file=sys.stderr)
    if args.json:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in rec.items()}
        print(json.dumps(clean, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
