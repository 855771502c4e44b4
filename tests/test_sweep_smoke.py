"""One real end-to-end smoke sweep (tiny RNNs) on the session's 2-CPU Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import search_spaces
from pipeline.analysis.results import CURVES_SCHEMA, TRIALS_SCHEMA, load
from pipeline.core.config import TrialConfig
from pipeline.orchestration.journal import study_states
from pipeline.sweep import main


def test_copy_task_smoke_sweep_end_to_end(ray_session: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--space", "copy_task", "--smoke", "--results", str(tmp_path),
               "--experiment", "smoke"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    smoke = search_spaces.get("copy_task").smoke_version()
    total = len(smoke.points()) * smoke.samples_per_point

    root = tmp_path / "copy_task"
    for table, schema in (("trials", TRIALS_SCHEMA), ("curves", CURVES_SCHEMA)):
        files = list((root / table).rglob("*.parquet"))
        assert files and all(pq.read_schema(f).equals(schema) for f in files)
    trials = pd.read_parquet(root / "trials")  # one pandas call per table
    curves = pd.read_parquet(root / "curves")
    assert len(trials) == trials["trial_id"].nunique() == total
    assert set(trials["status"]) <= {"completed", "pruned", "diverged"}
    assert set(TrialConfig.keys()) <= set(trials.columns)
    assert set(trials["model.cell"]) == {"gru", "brc"} and set(trials["task.seq_len"]) == {10, 20}
    done = trials[trials["status"] == "completed"]
    assert done["test_loss"].notna().all() and done["vaa_init"].between(0, 1).all()
    assert (trials["threads"] == 1).all() and trials["host"].notna().all()
    # every row, pruned ones included, says how its scans ran on the CPU
    assert trials["native_kernels"].notna().all() and trials["flush_denormal"].notna().all()
    assert (trials.loc[trials["warmup.steps"] == 0, "warmup.fraction"] == 0).all()
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    assert {"warmup", "train"} == set(curves["phase"])
    assert len(load("copy_task", "curves", results=str(tmp_path))) == len(curves)

    settings = json.loads((root / "experiments" / "smoke.json").read_text())
    assert settings["trials"] == total and "--smoke" in settings["command"]
    states = study_states(settings["journal"], settings["studies"])
    assert sum(states.values()) == total and set(states) <= {"COMPLETE", "PRUNED", "FAIL"}
    assert f"[{total}/{total}]" in out and "done:" in out
