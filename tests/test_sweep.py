"""The sweep CLI end to end on analytic objectives (no RNN), and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.orchestration.searcher import study_states
from pipeline.sweep import main

SUPPORT = "tests.analytic"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _settings(results: Path, space: str, exp: str) -> dict:
    return json.loads((results / space / "experiments" / f"{exp}.json").read_text())


# ----------------------------------------------------------------------------------- no Ray needed
def test_list_spaces_and_dry_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = _run(capsys, "--list-spaces")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == [
        "copy_cpu", "copy_task", "denoising", "seq_mnist"]
    rc, out, _ = _run(capsys, "--space", "copy_task", "--dry-run", "--results", str(tmp_path))
    assert rc == 0
    assert "108 scientific points x 4 samples = 432 trials" in out
    assert "nuisance train.lr" in out and "estimated cost" in out
    assert not list(tmp_path.iterdir())  # ran nothing, wrote nothing
    rc, out, _ = _run(capsys, "--space", "copy_task", "--smoke", "--dry-run")
    assert rc == 0 and "12 scientific points x 3 samples = 36 trials" in out


def _existing(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    (results / "analytic" / "experiments").mkdir(parents=True)
    (results / "analytic" / "experiments" / "old.json").write_text("{}")
    return results


@pytest.mark.parametrize("case", ["space", "key", "value", "type", "address", "unwritable", "uri",
                                  "corrupt", "journal", "exists", "resume-missing", "option"])
def test_bad_input_one_line_exit_2_nothing_written(case: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    argv = ["--space", f"{SUPPORT}:SPACE", "--results", str(results), "--experiment", "e"]
    expect = {"space": "unknown space", "key": "unknown config key", "value": "model.cell",
              "type": "train.epochs", "address": "cannot reach a Ray cluster",
              "unwritable": "cannot be created", "uri": "cannot open the results root",
              "corrupt": "corrupt results file",
              "journal": "corrupt results file", "exists": "already exists",
              "resume-missing": "nothing to resume", "option": "--seed"}[case]
    if case == "space":
        argv[1] = "no_such_space"
    elif case == "key":
        argv += ["--set", "model.celll=gru"]
    elif case == "value":
        argv += ["--set", "model.cell=rnn"]
    elif case == "type":
        argv += ["--set", "train.epochs=many"]
    elif case == "address":
        argv += ["--address", "127.0.0.1:1"]
    elif case == "unwritable":
        (tmp_path / "afile").write_text("x")
        argv[3] = str(tmp_path / "afile" / "results")
    elif case == "uri":
        argv[3] = "nosuchfs://bucket/results"
    elif case == "corrupt":
        bad = results / "analytic" / "trials" / "old"
        bad.mkdir(parents=True)
        (bad / "trial-x.parquet").write_bytes(b"PAR1 garbage")
    elif case == "journal":
        (results / "analytic").mkdir(parents=True)
        (results / "analytic" / "optuna.journal").write_text("{not json\n")
    elif case == "exists":
        results = _existing(tmp_path)
        argv[5] = "old"
    elif case == "resume-missing":
        argv[4:6] = ["--resume", "never-ran"]
    elif case == "option":
        argv += ["--seed", "abc"]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sweep: error: "), err
    assert expect in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ----------------------------------------------------------------------------------- on Ray
def test_pruned_trials_stop_early_recorded_pruned_in_study_and_parquet(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "--space", f"{SUPPORT}:PRUNABLE", "--results", str(tmp_path),
                        "--experiment", "p", "--seed", "3")
    assert rc == 0, err
    trials = pd.read_parquet(tmp_path / "analytic" / "trials")
    curves = pd.read_parquet(tmp_path / "analytic" / "curves")
    assert len(trials) == trials["trial_id"].nunique() == 10
    assert set(trials["status"]) <= {"completed", "pruned"}
    pruned = trials[trials["status"] == "pruned"]
    assert len(pruned) >= 1
    assert (pruned["epochs_run"] < 6).all() and (trials[trials.status == "completed"]
                                                  ["epochs_run"] == 6).all()
    train = curves[curves["phase"] == "train"].groupby("trial_id").size()
    assert (train[pruned["trial_id"]].values == pruned["epochs_run"].values).all()
    s = _settings(tmp_path, "analytic", "p")
    states = study_states(s["journal"], s["studies"])
    assert states == {"PRUNED": len(pruned), "COMPLETE": 10 - len(pruned)}
    assert out.count(" pruned ") == len(pruned) and "[10/10]" in out
    assert (tmp_path / "analytic" / "trials" / "p" / "compacted.parquet").exists()


def test_diverged_trials_are_recorded_and_the_sweep_goes_on(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "--space", f"{SUPPORT}:DIVERGING", "--results", str(tmp_path),
                      "--experiment", "d", "--pruner", "none")
    assert rc == 0, err
    trials = pd.read_parquet(tmp_path / "analytic" / "trials")
    assert len(trials) == 6 and set(trials["status"]) == {"completed", "diverged"}
    div = trials[trials["status"] == "diverged"]
    assert (div["train.lr"] > 1).all() and (div["diverged_step"] == 2).all()
    s = _settings(tmp_path, "analytic", "d")
    assert study_states(s["journal"], s["studies"]) == {"FAIL": len(div),
                                                        "COMPLETE": 6 - len(div)}


def test_a_dead_trial_process_is_retried_and_recorded_once(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    rc, _, err = _run(capsys, "--space", f"{SUPPORT}:DIES_ONCE", "--results", str(tmp_path),
                      "--experiment", "r", "--set", f"task.data_dir={markers}")
    assert rc == 0, err
    trials = pd.read_parquet(tmp_path / "analytic" / "trials")
    assert len(trials) == trials["trial_id"].nunique() == 2
    assert (trials["status"] == "completed").all() and (trials["retries"] == 1).all()
    assert len(list(markers.iterdir())) == 2


def test_gpu_request_without_gpus_warns_and_runs_on_cpu(
        ray_session: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "--space", f"{SUPPORT}:SPACE", "--smoke", "--set", "model.cell=gru",
                      "--results", str(tmp_path), "--experiment", "g", "--gpus-per-trial", "0.5")
    assert rc == 0 and "warning: --gpus-per-trial 0.5 but the cluster has no GPUs" in err
    assert _settings(tmp_path, "analytic", "g")["gpus_per_trial"] == 0.0
    assert len(pd.read_parquet(tmp_path / "analytic" / "trials")) == 3
