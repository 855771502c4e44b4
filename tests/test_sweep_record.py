"""The record under races, stale state and untrusted files: one writer per experiment, a resume
that trusts only data (never a pickle), every row complete (config and provenance)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.analysis.results import ExperimentLock, LockHeld, Store, git_sha
from pipeline.core.config import TrialConfig
from pipeline.orchestration.journal import check_journal, repair_journal
from pipeline.sweep import main
from tests.test_sweep_faults import audit

ROOT = Path(__file__).resolve().parents[1]
SPACE = "tests.analytic:SPACE"  # 6 points x 2 samples of instant trials


def _sweep(tmp_path: Path, ray: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.sweep", "--space", SPACE, "--results", str(tmp_path),
            "--address", ray, *extra]


def test_two_drivers_on_one_experiment_one_runs_the_other_is_refused(
        ray_session: str, tmp_path: Path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    argv = _sweep(tmp_path, ray_session, "--experiment", "race")
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    refused = next(err for p, (_, err) in zip(procs, results, strict=True) if p.returncode == 2)
    assert ("is locked by pid" in refused or "already exists" in refused), refused
    assert len(refused.strip().splitlines()) == 1
    counts = audit(tmp_path, "analytic", "race")  # 12 rows, not 24; studies one to one
    assert sum(v for k, v in counts.items() if k != "orphans") == 12


def test_a_stale_lock_of_a_dead_driver_is_taken_over(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "analytic" / "experiments" / "s.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                "started_at": "2026-01-01T00:00:00"}))  # its flock died with it
    rc = main(["--space", SPACE, "--results", str(tmp_path), "--address", ray_session,
               "--experiment", "s"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    assert f"took over the lock left by pid {dead.pid}" in err
    assert not lock.exists()  # released at the end


_HOLD = """
import sys, time
from pipeline.analysis.results import ExperimentLock
lock = ExperimentLock(sys.argv[1], "holder")
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_the_lock_is_the_kernel_s_and_dies_with_its_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "x.lock")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, path], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(LockHeld, match=f"pid {holder.pid} on {socket.gethostname()}"):
            ExperimentLock(path).acquire()
    finally:
        holder.kill()  # kill -9: the kernel drops its lock, the file stays
        holder.wait()
    assert Path(path).exists()
    taker = ExperimentLock(path)
    assert f"left by pid {holder.pid}" in (taker.acquire() or "")
    again = ExperimentLock(path)  # held again, now by this process: refused too
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
        again.acquire()
    taker.release()
    assert not Path(path).exists()
    assert ExperimentLock(path).acquire() is None  # a fresh file: nobody left it


def test_resume_trusts_data_only_never_a_pickle(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--space", SPACE, "--results", str(tmp_path), "--address", ray_session]
    assert main([*args, "--experiment", "p"]) == 0
    # Whoever can write the shared storage plants code in every pickle Tune left there...
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (open, (str(marker), "w"))

    planted = 0
    for path in (tmp_path / "analytic" / "tune").rglob("*.pkl"):
        path.write_bytes(pickle.dumps(Payload()))
        planted += 1
    assert planted
    # ...and two rows are lost: the resume reruns exactly those, reading no pickle.
    trials = tmp_path / "analytic" / "trials" / "p"
    table = pd.read_parquet(trials)
    kept = table[~table["trial_id"].isin(["p0-s0", "p3-s1"])]
    for f in trials.iterdir():
        f.unlink()
    store = Store(str(tmp_path), "analytic", "p")
    for tid, rows in kept.groupby("trial_id"):
        store.write_table("trials", f"trial-{tid}", rows.to_dict("records"))
    capsys.readouterr()
    assert main([*args, "--resume", "p"]) == 0
    out, _ = capsys.readouterr()
    assert "10/12 runs recorded, 2 to run" in out
    assert not marker.exists()
    rows = pd.read_parquet(trials)
    assert sorted(rows["trial_id"]) == sorted({f"p{i}-s{s}" for i in range(6) for s in (0, 1)})


def test_resume_refuses_a_space_edited_since_and_applies_resources(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--space", SPACE, "--results", str(tmp_path), "--address", ray_session]
    assert main([*args, "--experiment", "d"]) == 0
    settings_path = tmp_path / "analytic" / "experiments" / "d.json"
    settings = json.loads(settings_path.read_text())
    edited = {**settings, "definition": {**settings["definition"], "fixed": {"train.epochs": 9}}}
    settings_path.write_text(json.dumps(edited))
    capsys.readouterr()
    assert main([*args, "--resume", "d"]) == 2
    assert "changed since experiment 'd' started" in capsys.readouterr().err
    settings_path.write_text(json.dumps({**settings, "protocol": "0123456789"}))
    assert main([*args, "--resume", "d"]) == 2  # a default of the code changed since
    assert "the protocol of experiment 'd' changed" in capsys.readouterr().err
    settings_path.write_text(json.dumps(settings))
    assert main([*args, "--resume", "d", "--max-concurrent", "1", "--cpus-per-trial", "1"]) == 0
    assert "12/12 runs recorded, 0 to run" in capsys.readouterr().out


def test_a_journal_cut_by_a_kill_is_repaired_by_the_resume(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--space", SPACE, "--results", str(tmp_path), "--address", ray_session]
    assert main([*args, "--experiment", "j"]) == 0
    journal = tmp_path / "analytic" / "optuna.journal"
    whole = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 3, "sta')  # cut mid-line
    with pytest.raises(ValueError, match="incomplete"):
        check_journal(str(journal))
    capsys.readouterr()
    assert main([*args, "--resume", "j"]) == 0
    assert "cut an incomplete last line" in capsys.readouterr().err
    assert journal.read_bytes() == whole  # cut off; and a resume with nothing to run writes none
    assert repair_journal(str(journal)) == 0  # idempotent
    audit(tmp_path, "analytic", "j")


def test_pruned_rows_carry_the_whole_config_and_every_row_its_provenance(
        ray_session: str, tmp_path: Path) -> None:
    assert main(["--space", "tests.analytic:PRUNABLE", "--results", str(tmp_path), "--address",
                 ray_session, "--experiment", "c"]) == 0
    rows = pd.read_parquet(tmp_path / "analytic" / "trials")
    assert (rows["status"] == "pruned").any()
    defaults = TrialConfig().to_dict()
    for key in ("warmup.eps", "vaa.estimates", "warmup.increment", "train.clip"):
        assert rows[key].notna().all(), key
        assert (rows[key] == defaults[key]).all(), key
    assert str(rows["vaa.estimates"].dtype) == "int64"
    for col in ("git_sha", "numpy_version", "pyarrow_version", "torch_version", "cpu_model",
                "tune_trial_id", "sample", "protocol", "smoke"):
        assert rows[col].notna().all(), col
    assert sorted(rows["trial_id"]) == sorted(f"p0-s{s}" for s in range(10))


def test_memory_and_cuda_requests_are_refused_before_anything_runs(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--space", SPACE, "--results", str(tmp_path), "--address", ray_session,
            "--experiment", "m"]
    assert main([*args, "--set", "task.train_samples=1000000000000"]) == 2
    assert "needs at least" in capsys.readouterr().err
    assert main([*args, "--set", "device=cuda"]) == 2
    assert "device=cuda needs a GPU" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.parquet"))


def test_git_sha_dirty_with_untracked_files_and_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert git_sha(str(repo)) == sha
    (repo / "space.py").write_text("SPACE = 1\n")  # an untracked space file: not clean
    assert git_sha(str(repo)) == f"{sha}-dirty"
    plain = tmp_path / "job"  # a cluster job's working dir: no .git
    plain.mkdir()
    monkeypatch.setenv("WARMUP_SWEEP_GIT_SHA", "abc123")
    assert git_sha(str(plain)) == "abc123"
    monkeypatch.delenv("WARMUP_SWEEP_GIT_SHA")
    assert git_sha(str(plain)) is None


def test_compaction_leaves_one_file_and_the_same_rows(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "s", "e")
    for k in range(3):
        store.write_trial(f"p{k}-s0", [{"status": "completed", "replica": 0}],
                          [{"phase": "train", "step": 1, "replica": 0}])
    before = store.read("trials")
    assert store.compact()
    assert [p.name for p in (tmp_path / "s" / "trials" / "e").iterdir()] == ["compacted.parquet"]
    pd.testing.assert_frame_equal(store.read("trials"), before)
    assert not list((tmp_path / "s").rglob(".*"))  # no temporary folder left


def test_compaction_keeps_every_int64_exact(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "s", "e")
    store.write_trial("p0-s0", [{"status": "completed", "replica": 0, "seed": 2**60 + 1}], [])
    store.write_trial("p1-s0", [{"status": "completed", "replica": 0, "seed": None}], [])
    assert store.compact()
    import pyarrow.parquet as pq
    seeds = pq.read_table(tmp_path / "s" / "trials" / "e" / "compacted.parquet").column("seed")
    assert sorted(seeds.to_pylist(), key=str) == [2**60 + 1, None]


def test_if_exists_resume_continues_the_same_experiment_only(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--space", SPACE, "--results", str(tmp_path), "--address", ray_session,
            "--experiment", "job", "--if-exists", "resume", "--set", "train.epochs=3"]
    assert main(argv) == 0  # new
    assert "experiment job: 12 trials" in capsys.readouterr().out
    assert main(argv) == 0  # the job script resubmitted: resumed, nothing rerun
    assert "resuming job: 12/12 runs recorded, 0 to run" in capsys.readouterr().out
    assert main([*argv[:-1], "train.epochs=4"]) == 2  # another definition under the same name
    assert "exists with another definition, sets" in capsys.readouterr().err
    assert main(argv[:-4]) == 2  # without --if-exists: refused as before
    assert "already exists" in capsys.readouterr().err


def test_a_resume_without_its_journal_is_refused(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--space", SPACE, "--results", str(tmp_path), "--address", ray_session]
    assert main([*args, "--experiment", "lost"]) == 0
    (tmp_path / "analytic" / "optuna.journal").unlink()  # the head's disk, gone with the head
    capsys.readouterr()
    assert main([*args, "--resume", "lost"]) == 2
    assert "is gone: its studies cannot be reconciled with the 12 recorded rows" in \
        capsys.readouterr().err
