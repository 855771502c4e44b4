"""The sweep CLI end to end on analytic objectives (no RNN), and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.orchestration.journal import study_states
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
        "copy_cpu", "copy_task", "denoising", "seq_mnist", "study_cpu"]
    rc, out, _ = _run(capsys, "--space", "copy_task", "--dry-run", "--results", str(tmp_path))
    assert rc == 0
    assert "108 scientific points x 4 samples = 432 trials" in out
    assert "nuisance train.lr" in out and "CPU core-hours" in out
    assert "GPU-hours: not measured" in out and "2-core AMD EPYC" in out
    assert "  model.cell: brc, gru, lstm, nbrc (4)" in out and "task.seq_len" in out
    assert "  gru " not in out  # the 108-row grid only with --verbose
    rc, out, _ = _run(capsys, "--space", "copy_task", "--dry-run", "--verbose")
    assert rc == 0 and len([line for line in out.splitlines() if line.startswith("  gru")]) == 27
    rc, out, _ = _run(capsys, "--space", "seq_mnist", "--dry-run")  # no MNIST files needed
    assert rc == 0 and "to run it: --set task.data_dir=" in out
    assert not list(tmp_path.iterdir())  # ran nothing, wrote nothing
    rc, out, _ = _run(capsys, "--space", "copy_task", "--smoke", "--dry-run")
    assert rc == 0 and "12 scientific points x 3 samples = 36 trials" in out


def _existing(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    (results / "analytic" / "experiments").mkdir(parents=True)
    (results / "analytic" / "experiments" / "old.json").write_text("{}")
    return results


_CASES = ["space", "key", "value", "type", "address", "unwritable", "uri", "corrupt", "journal",
          "exists", "resume-missing", "option", "resume-empty", "experiment-empty",
          "name-newline", "cpus-nan", "gpus-nan", "seed-huge", "seed-option-huge",
          "max-failures", "chrono-nan", "corrupt-data", "wrong-type", "storage-file",
          "resume-set", "resume-smoke", "resume-old-format", "locked", "reused-name",
          "reused-study", "not-ray", "memory-dry-run", "journal-middle", "too-many-runs",
          "journal-not-journal", "journal-folder", "settings-not-object", "settings-missing",
          "if-exists-unnamed", "denoising-pad"]


def _write_trials_file(path: Path, **columns: object) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({k: [v] for k, v in columns.items()}), path)


@pytest.mark.parametrize("case", _CASES)
def test_bad_input_one_line_exit_2_nothing_written(case: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    argv = ["--space", f"{SUPPORT}:SPACE", "--results", str(results), "--experiment", "e"]
    expect = {"space": "unknown space", "key": "unknown config key", "value": "model.cell",
              "type": "train.epochs", "address": "cannot reach a Ray cluster",
              "unwritable": "cannot be created", "uri": "cannot open the results root",
              "corrupt": "corrupt results file",
              "journal": "corrupt results file", "exists": "already exists",
              "resume-missing": "nothing to resume", "option": "--seed",
              "resume-empty": "experiment name ''", "experiment-empty": "experiment name ''",
              "name-newline": "experiment name 'e\\n'", "cpus-nan": "--cpus-per-trial must be",
              "gpus-nan": "--gpus-per-trial must be", "seed-huge": "seed=1e+30 is out of range",
              "seed-option-huge": "seed=1e+20 is out of range", "max-failures": "--max-failures",
              "chrono-nan": "model.chrono_t_max", "corrupt-data": "corrupt results file",
              "wrong-type": "column 'optuna_trial' is string, expected int64",
              "storage-file": "--storage", "resume-set": "drop --set",
              "resume-smoke": "drop --smoke, --seed", "resume-old-format": "older version",
              "locked": "is locked by pid", "reused-name": "already exists",
              "reused-study": "its studies in", "not-ray": "not a Ray cluster",
              "memory-dry-run": "needs at least", "journal-middle": "corrupt results file",
              "too-many-runs": "more than one experiment holds",
              "journal-not-journal": "corrupt results file", "journal-folder": "is a folder",
              "settings-not-object": "not a JSON object", "settings-missing": "lacks",
              "if-exists-unnamed": "--if-exists resume needs --experiment",
              "denoising-pad": "too short for denoising"}[case]
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
    elif case == "resume-empty":
        argv[4:6] = ["--resume", ""]  # an unset variable: never a new full-size experiment
    elif case == "experiment-empty":
        argv[5] = ""
    elif case == "name-newline":
        argv[5] = "e\n"
    elif case in ("cpus-nan", "gpus-nan"):
        argv += [f"--{case[:4]}-per-trial", "nan"]
    elif case == "seed-huge":
        argv += ["--set", "seed=1e30"]
    elif case == "seed-option-huge":
        argv += ["--seed", str(10**20)]
    elif case == "max-failures":
        argv += ["--max-failures", "-5"]
    elif case == "chrono-nan":
        argv += ["--set", "model.chrono_t_max=nan"]
    elif case == "corrupt-data":  # an intact footer over damaged pages
        good = results / "analytic" / "trials" / "old" / "trial-p0-s0.parquet"
        _write_trials_file(good, trial_id="p0-s0", status="completed" * 50, objective=1.0)
        data = bytearray(good.read_bytes())
        data[4:60] = b"\xff" * 56
        good.write_bytes(bytes(data))
    elif case == "wrong-type":
        _write_trials_file(results / "analytic" / "trials" / "old" / "trial-p0-s0.parquet",
                           trial_id="p0-s0", optuna_trial="3")
    elif case == "storage-file":
        (tmp_path / "afile").write_text("x")
        argv += ["--storage", str(tmp_path / "afile" / "tune")]
    elif case in ("resume-set", "resume-smoke", "resume-old-format"):
        results = _existing(tmp_path)
        if case != "resume-old-format":
            settings = {"plan": "runs/1", "experiment": "old"}
            (results / "analytic" / "experiments" / "old.json").write_text(json.dumps(settings))
        argv[4:6] = ["--resume", "old"]
        argv += {"resume-set": ["--set", "model.cell=gru"], "resume-smoke": ["--smoke", "--seed",
                                                                           "3"]}.get(case, [])
    elif case == "locked":  # a live holder: this very process
        from pipeline.analysis.results import ExperimentLock
        lock = ExperimentLock(str(results / "analytic" / "experiments" / "e.lock"), "other")
        lock.acquire()
    elif case == "reused-name":  # experiment.json deleted, the rows still there
        _write_trials_file(results / "analytic" / "trials" / "e" / "trial-p0-s0.parquet",
                           trial_id="p0-s0")
    elif case == "reused-study":
        import optuna
        (results / "analytic").mkdir(parents=True)
        optuna.create_study(study_name="e/model.cell=gru", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(results / "analytic" /
                                                           "optuna.journal"))))
    elif case == "not-ray":
        import socket
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        argv += ["--address", f"127.0.0.1:{server.getsockname()[1]}"]
    elif case == "memory-dry-run":
        argv += ["--set", "task.seq_len=1000000000", "--dry-run"]
    elif case == "journal-middle":  # a cut line that is not the last: not repairable
        (results / "analytic").mkdir(parents=True)
        (results / "analytic" / "optuna.journal").write_text('{"op_code": 0\n{"op_code": 1}\n')
    elif case == "if-exists-unnamed":
        argv[4:6] = ["--if-exists", "resume"]
    elif case == "denoising-pad":
        argv += ["--set", "task.name=denoising", "--set", "task.pad=2"]
    elif case == "too-many-runs":
        argv += ["--num-samples", str(10**12)]
    elif case == "journal-not-journal":  # never "mended": it is not the experiment's journal
        _write_trials_file(tmp_path / "t.parquet", a=1)
        argv += ["--journal", str(tmp_path / "t.parquet")]
    elif case == "journal-folder":
        argv += ["--journal", str(tmp_path)]
    elif case in ("settings-not-object", "settings-missing"):
        results = _existing(tmp_path)
        text = "[1, 2]" if case == "settings-not-object" else json.dumps(
            {"plan": "runs/1", "experiment": "old", "smoke": False})
        (results / "analytic" / "experiments" / "old.json").write_text(text)
        argv[4:6] = ["--resume", "old"]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    contents = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sweep: error: "), err
    assert expect in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert {p: p.read_bytes() for p in contents} == contents  # nothing changed either
    if case == "locked":
        lock.release()


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


def test_help_and_planning_load_neither_ray_optuna_nor_pandas() -> None:
    """--help, --list-spaces and --dry-run answer fast: the heavy libraries load only to run."""
    import subprocess
    import sys
    code = ("import sys; from pipeline.sweep import main; "
            "main(['--space', 'copy_task', '--smoke', '--dry-run']); "
            "print(sorted(m for m in ('ray', 'optuna', 'pandas', 'pyarrow', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv, hint", [
    (["--space", "copy_task", "--set", "model.celll=gru"], "did you mean 'model.cell'?"),
    (["--space", "copy_tsk"], "did you mean 'copy_task'?"),
    (["--space", "copy_task", "--seeed", "3"], "did you mean '--seed'?")])
def test_mistypes_get_one_line_with_the_closest_name(
        argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert hint in err and err.count("\n") == 1


def test_the_plan_says_what_the_sampler_really_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--space", "copy_task", "--dry-run"]) == 0
    assert "tpe (random search here: TPE draws its first 10 trials at random and each point " \
           "has 4)" in capsys.readouterr().out
    assert main(["--space", "copy_task", "--dry-run", "--num-samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "one tpe study per point" in out


def test_the_experiment_log_holds_no_metrics_noise(ray_session: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--space", f"{SUPPORT}:SPACE", "--results", str(tmp_path), "--address",
                 ray_session, "--experiment", "quiet"]) == 0
    log = (tmp_path / "analytic" / "experiments" / "quiet.log").read_text()
    assert "fetch metrics" not in log
    out, err = capsys.readouterr()
    assert "fetch metrics" not in out + err
