"""REPRODUCTION.md's verdicts on a hand-made table whose answers are known."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.analysis.claims import claims
from pipeline.analysis.report import prepare
from pipeline.reproduction import main

# test MSE at T = 25, 50 per arm; by hand with threshold 0.1:
#   cold: horizon 25, precision 0.02; f=1: horizon 50, precision 0.05; f=0.5: horizon 50, 0.03
ERR = {(0, 0.0): (0.02, 0.9), (100, 1.0): (0.05, 0.05), (100, 0.5): (0.03, 0.06)}


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, curves = [], []
    for (steps, frac), errs in ERR.items():
        for T, err in zip((25, 50), errs, strict=True):
            tid = f"t{steps}-{frac}-{T}"
            for rep, off in enumerate((-0.001, 0.0, 0.001)):
                learned = err < 0.1
                rows.append({"experiment": "e", "trial_id": tid, "replica": rep,
                             "status": "completed", "task.name": "copy", "task.seq_len": T,
                             "task.pad": None, "model.cell": "gru", "warmup.steps": steps,
                             "warmup.fraction": frac, "seed": rep, "vaa.samples": 32,
                             "vaa_init": 1 / 32, "vaa_warm": 0.5 if steps else 1 / 32,
                             "test_loss": err + off, "test_accuracy": None})
                for epoch in (1, 2):
                    curves.append({"experiment": "e", "trial_id": tid, "replica": rep,
                                   "phase": "train", "step": epoch, "valid_loss": err,
                                   "vaa": (0.5 if learned else 1 / 32) * epoch / 2 + 0.01 * off})
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_verdicts_by_hand() -> None:
    trials, curves = tables()
    out = {c[:2]: (v, e) for c, v, e in claims(prepare(trials), curves, 0.1)}
    assert out["1."][0] == "supported"
    assert out["2."][0] == "supported"
    verdict3, ev3 = out["3."]
    assert verdict3 == "memory gain supported; precision cost seen for gru"
    assert "memory horizon cold 25 -> fully warmed 50" in ev3
    assert "warm-up impeded precision here" in ev3
    verdict4, ev4 = out["4."]
    assert verdict4 == "gru: memory kept, precision recovered"
    assert "memory horizon 50 vs fully warmed 50" in ev4


def test_a_run_without_the_effect_is_not_supported() -> None:
    trials, curves = tables()
    trials.loc[trials["warmup.steps"] > 0, "test_loss"] = 0.9  # warm-up learns nothing
    out = {c[:2]: v for c, v, _ in claims(prepare(trials), curves, 0.1)}
    assert out["3."].startswith("memory gain not supported")
    assert out["4."] == "gru: memory kept, precision not recovered"  # 0 >= 0; 0.9 vs 0.9


def test_missing_tables_exit_2(tmp_path: Path) -> None:
    assert main(["--results", str(tmp_path), "--out", str(tmp_path / "R.md")]) == 2


@pytest.mark.parametrize("extra, expected", [(["--threshold", "nan"], "--threshold"),
                                             (["--threshold", "-1"], "--threshold"),
                                             (["--space", "../x"], "not a path"),
                                             (["--out", "FOLDER"], "is a folder"),
                                             (["--out", "FILE/R.md"], "cannot be created")])
def test_bad_arguments_exit_2_before_any_figure_is_written(
        tmp_path: Path, extra: list[str], expected: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "FOLDER").mkdir()
    extra = [str(tmp_path / e) if e.startswith(("FILE", "FOLDER")) else e for e in extra]
    figures = tmp_path / "figs"
    argv = ["--results", str(tmp_path), "--out", str(tmp_path / "R.md"), "--figures",
            str(figures), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not figures.exists() and not (tmp_path / "R.md").exists()


def test_the_repository_s_reproduction_is_never_overwritten_by_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.reproduction as cli
    seen = {}

    def fake_write(results, space, experiment, out, figures, threshold, command):  # noqa: ANN001
        seen.update(out=out, figures=figures)
        return out
    monkeypatch.setattr(cli, "write", fake_write)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--results", str(tmp_path / "results")]) == 0
    assert seen["out"] == tmp_path / "results" / "copy_cpu" / "reproduction" / "REPRODUCTION.md"
    assert seen["figures"] == seen["out"].parent / "figures"
    assert not (tmp_path / "REPRODUCTION.md").exists()
