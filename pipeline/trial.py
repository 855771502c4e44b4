"""One trial without Ray: ``python -m pipeline.trial --set key=value ... [--device auto|cpu|cuda] [--json]``.

Runs :func:`pipeline.core.trial.run_trial` with one progress line per epoch on stderr and, with
``--json``, the final record as one JSON line on stdout. Bad input: one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from pipeline.core.config import TrialConfig, parse_sets
from pipeline.core.device import resolve_device
from pipeline.core.trial import run_trial

__all__ = ["main", "run_trial"]

def _progress(m: dict[str, Any]) -> None:
    if m["phase"] == "train":
        acc = "" if m["valid_accuracy"] is None else f" valid_acc={m['valid_accuracy']:.4f}"
        vaa = "" if m["vaa"] is None else f" vaa={m['vaa']:.3f}"
        print(f"epoch {m['step']}: train_loss={m['train_loss']:.5f} valid_loss="
              f"{m['valid_loss']:.5f}{acc}{vaa} ({m['elapsed_s']:.1f}s)", file=sys.stderr)
    elif m["phase"] == "warmup" and m["step"] % 10 == 0:
        print(f"warm-up step {m['step']}: loss={m['loss']:.5f} vaa*={m['vaa_star']:.3f}",
              file=sys.stderr)


def _finite(obj: Any) -> Any:
    """NaN/Inf -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    """Run one trial without Ray. Returns 0, or 2 on bad input."""
    p = argparse.ArgumentParser(prog="python -m pipeline.trial", description="Run one trial without Ray.")
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
        for r in [rec, *rec.get("per_seed", [])]:
            r.pop("curves", None)
    print(f"{rec['status']}: test_loss={rec['test_loss']} best_valid_loss={rec['best_valid_loss']} "
          f"vaa_init={rec['vaa_init']} vaa_warm={rec['vaa_warm']}", file=sys.stderr)
    if args.json:
        print(json.dumps(_finite(rec), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
