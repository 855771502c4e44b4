"""Parquet tables: declared schemas, atomic idempotent writes, compaction, loading (no Ray)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.analysis.results import (
    CURVES_SCHEMA,
    TRIALS_SCHEMA,
    ResultsError,
    Store,
    load,
    record_rows,
    to_table,
)
from pipeline.core.config import TrialConfig

ROOT = Path(__file__).resolve().parents[2]
RECORD = ("status", "error", "diverged_phase", "diverged_step", "vaa_init", "vaa_star_init",
          "vaa_warm", "vaa_star_warm", "best_valid_loss", "best_epoch", "test_loss",
          "test_accuracy", "epochs_run", "n_params", "warmup_s", "train_s", "device")


def _record(seed: int = 0, **extra: Any) -> dict[str, Any]:
    cfg = TrialConfig.from_dict({"seed": seed, "model.cell": "lstm"}).to_dict()
    curves = [{"phase": "warmup", "step": 0, "train_loss": 0.5, "vaa_star": 0.9, "elapsed_s": 0.1},
              {"phase": "train", "step": 1, "train_loss": 1.0, "valid_loss": 0.8, "vaa": 0.2,
               "valid_accuracy": None, "vaa_star": None, "elapsed_s": 0.5}]
    return {**cfg, "status": "completed", "best_valid_loss": 0.8, "best_epoch": 1,
            "epochs_run": 1, "n_params": 123, "device": "cpu", "curves": curves, **extra}


def test_schemas_hold_every_config_key_and_record_field() -> None:
    names = set(TRIALS_SCHEMA.names)
    assert set(TrialConfig.keys()) <= names
    assert set(RECORD) <= names
    assert {"space", "experiment", "trial_id", "replica", "point", "study", "retries", "host",
            "git_sha", "started_at", "finished_at", "objective"} <= names
    assert len(names) == len(TRIALS_SCHEMA.names)  # no duplicate column
    assert CURVES_SCHEMA.names[:6] == ["space", "experiment", "trial_id", "replica", "phase",
                                       "step"]


def test_record_field_list_matches_the_core() -> None:
    trial = pytest.importorskip("pipeline.core.trial")
    assert set(trial.RECORD_FIELDS) <= set(TRIALS_SCHEMA.names)


def test_write_is_typed_idempotent_and_loads_across_experiments(tmp_path: Path) -> None:
    for exp in ("a", "b"):
        store = Store(str(tmp_path), "sp", exp)
        rows, curves = record_rows(_record(), point="p", retries=0)
        store.write_trial("t1", rows, curves)
        store.write_trial("t1", rows, curves)  # a second write replaces the first
    trials = pd.read_parquet(tmp_path / "sp" / "trials")
    curves = pd.read_parquet(tmp_path / "sp" / "curves")
    assert sorted(trials["experiment"]) == ["a", "b"] and len(curves) == 4
    assert list(trials.columns) == TRIALS_SCHEMA.names
    assert trials["model.cell"].tolist() == ["lstm", "lstm"]
    assert trials["test_accuracy"].isna().all() and trials["n_params"].dtype == "int64"
    for f in (tmp_path / "sp" / "trials" / "a").iterdir():
        assert pq.read_schema(f).equals(TRIALS_SCHEMA)
    assert len(load("sp", "trials", results=str(tmp_path), experiments="a")) == 1
    assert Store(str(tmp_path), "sp", "a").trial_ids() == {"t1"}
    assert not list((tmp_path / "sp" / "trials" / "a").glob(".*"))  # no temporary left behind


def test_one_row_per_seed_with_a_replica_column() -> None:
    per_seed = [_record(seed=s, best_valid_loss=0.5 + s) for s in (3, 4)]
    rows, curves = record_rows({**_record(seed=3), "per_seed": per_seed}, objective=1.0)
    assert [r["replica"] for r in rows] == [0, 1] and [r["seed"] for r in rows] == [3, 4]
    assert [r["best_valid_loss"] for r in rows] == [3.5, 4.5]
    assert {c["replica"] for c in curves} == {0, 1} and len(curves) == 4
    table = to_table(rows, TRIALS_SCHEMA)
    assert table.num_rows == 2 and table.schema.equals(TRIALS_SCHEMA)


def test_compaction_keeps_rows_and_load_drops_crash_duplicates(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "sp", "e")
    for tid in ("t1", "t2", "t3"):
        store.write_trial(tid, *record_rows(_record()))
    store.compact()
    files = sorted(p.name for p in (tmp_path / "sp" / "trials" / "e").iterdir())
    assert files == ["compacted.parquet"]
    store.write_trial("t2", *record_rows(_record()))  # as if a crash left a part behind
    assert len(load("sp", results=str(tmp_path))) == 3
    assert store.trial_ids() == {"t1", "t2", "t3"}
    store.compact()
    assert len(pd.read_parquet(tmp_path / "sp" / "trials")) == 3
    assert len(pd.read_parquet(tmp_path / "sp" / "curves")) == 6


def test_a_reader_racing_a_compaction_sees_every_row_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader lists the per-run files; before it opens them another process compacts them
    away (what a watcher of a finishing sweep meets). The read retries on the new listing."""
    import pipeline.analysis.results as results
    writer = Store(str(tmp_path), "sp", "e")
    for tid in ("t1", "t2", "t3"):
        writer.write_trial(tid, *record_rows(_record()))
    listed = results._tables_of
    raced: list[str] = []

    def list_then_compact(fs: Any, folder: str) -> list[str]:
        files = listed(fs, folder)
        if not raced:
            raced.append(folder)
            with monkeypatch.context() as m:
                m.setattr(results, "_tables_of", listed)
                assert Store(str(tmp_path), "sp", "e").compact()
        return files

    monkeypatch.setattr(results, "_tables_of", list_then_compact)
    assert Store(str(tmp_path), "sp", "e").trial_ids() == {"t1", "t2", "t3"}
    assert raced  # the race did happen: the first listing named files that were gone
    assert sorted(p.name for p in (tmp_path / "sp" / "trials" / "e").iterdir()) == [
        "compacted.parquet"]


def test_corrupt_files_and_unwritable_folders_are_reported(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "sp", "e")
    store.write_trial("t1", *record_rows(_record()))
    store.check_readable()
    (tmp_path / "sp" / "curves" / "e" / "trial-t9.parquet").write_bytes(b"not parquet")
    with pytest.raises(ResultsError, match="corrupt results file .*trial-t9.parquet"):
        store.check_readable()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultsError, match="is a file"):
        Store(str(blocker / "results"), "sp", "e").check_writable()
    Store(str(tmp_path / "new" / "deeper"), "sp", "e").check_writable()
    assert not (tmp_path / "new").exists()  # the check creates nothing


def test_results_module_imports_neither_torch_nor_ray() -> None:
    code = ("import sys, pipeline.analysis.results; "
            "bad = [m for m in ('torch', 'ray', 'optuna') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_results_root_can_be_a_uri(tmp_path: Path) -> None:
    store = Store(f"file://{tmp_path}/r", "sp", "e")
    store.check_writable()
    store.write_trial("t1", *record_rows(_record()))
    assert store.trial_ids() == {"t1"}
    assert len(load("sp", results=f"file://{tmp_path}/r")) == 1
    assert len(pd.read_parquet(tmp_path / "r" / "sp" / "trials")) == 1
