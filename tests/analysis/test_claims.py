"""REPRODUCTION.md's verdicts on a hand-made table whose answers are known."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.analysis.claims import claims
from pipeline.analysis.report import prepare
from pipeline.reproduction import main

ROOT = Path(__file__).resolve().parents[2]

# Five seeds per point, test MSE at T = 25 and 50 per arm. By hand, threshold 0.1:
#   cold:  T=25 learned (0.010-0.014), T=50 not (0.9): horizon 25, precision 0.012
#   f=1:   both learned, T=25 at 0.050-0.054: horizon 50, precision 0.052 (a cost: every warm
#          seed worse than every cold one, exact permutation p = 2/252 = 0.0079)
#   f=0.5: both learned, T=25 at 0.011-0.015: horizon 50 (kept), precision 0.013 (recovered:
#          p vs f=1 = 0.0079)
ERR = {(0, 0.0): (0.010, 0.9), (100, 1.0): (0.050, 0.05), (100, 0.5): (0.011, 0.06)}
OFFSETS = (0.0, 0.001, 0.002, 0.003, 0.004)


def tables(err: dict = ERR) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, curves = [], []
    for (steps, frac), errs in err.items():
        for T, e in zip((25, 50), errs, strict=True):
            tid = f"t{steps}-{frac}-{T}"
            for rep, off in enumerate(OFFSETS):
                learned = e + off < 0.1
                rows.append({"experiment": "e", "trial_id": tid, "replica": rep,
                             "status": "completed", "task.name": "copy", "task.seq_len": T,
                             "task.pad": None, "model.cell": "gru", "warmup.steps": steps,
                             "warmup.fraction": frac, "seed": rep, "vaa.samples": 32,
                             "vaa_init": 1 / 32, "vaa_warm": 0.5 if steps else 1 / 32,
                             "test_loss": e + off, "test_accuracy": None})
                for epoch in (1, 2):
                    curves.append({"experiment": "e", "trial_id": tid, "replica": rep,
                                   "phase": "train", "step": epoch, "valid_loss": e,
                                   "vaa": 0.5 * epoch / 2 + off if learned else 1 / 32})
    return pd.DataFrame(rows), pd.DataFrame(curves)


def test_verdicts_by_hand() -> None:
    trials, curves = tables()
    out = {c[:2]: (v, e) for c, v, e in claims(prepare(trials), curves, 0.1)}
    assert out["1."][0] == "supported"
    assert out["2."][0] == "copy: supported"
    verdict3, ev3 = out["3."]
    assert verdict3 == "copy: memory gain for gru; precision cost for gru"
    assert ("- gru: memory horizon cold 25 -> f=1, 100 steps 50 (best arm: f=0.5, 100 steps, 50)"
            "; at T=50 seeds learned cold 0/5 [0.00, 0.43] vs 5/5 [0.57, 1.00] (Wilson 95%); "
            "precision at T=25 cold 0.012 (5/5 learned) vs 0.052 (5/5), permutation p = 0.0079 "
            "(warm-up cost precision)") in ev3
    assert "| gru | cold | 5/5 | 0/5 | 25 | 0.012 (5/5) |" in ev3
    verdict4, ev4 = out["4."]
    assert verdict4 == "copy: gru: memory kept and precision recovered by f=0.5, 100 steps"
    assert "precision 0.013 (5/5) vs full 0.052, cold 0.012; p vs full = 0.0079" in ev4


def test_a_run_without_the_effect_is_not_supported() -> None:
    trials, curves = tables({(0, 0.0): (0.010, 0.9), (100, 1.0): (0.9, 0.9),
                             (100, 0.5): (0.9, 0.9)})  # warm-up learns nothing
    out = {c[:2]: v for c, v, _ in claims(prepare(trials), curves, 0.1)}
    assert out["3."] == ("copy: no memory gain for gated cells, a shorter horizon when warmed "
                         "for gru; no significant precision cost")
    assert out["4."] == "copy: not testable (full warm-up cost no precision)"


def test_a_cost_without_a_partial_recovery_says_so() -> None:
    trials, curves = tables({(0, 0.0): (0.010, 0.9), (100, 1.0): (0.050, 0.05),
                             (100, 0.5): (0.060, 0.06)})
    out = {c[:2]: v for c, v, _ in claims(prepare(trials), curves, 0.1)}
    assert out["4."] == ("copy: gru: precision not significantly recovered (closest: f=0.5, "
                         "100 steps 0.062 vs full 0.052, cold 0.012, p = 0.0079)")


def test_the_committed_study_regenerates_reproduction_md_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The repository's REPRODUCTION.md is what its command makes of the committed tables."""
    monkeypatch.chdir(tmp_path)  # the default tables are found through the package's checkout
    assert main(["--out", "REPRODUCTION.md", "--figures", "docs/reproduction"]) == 0
    assert (tmp_path / "REPRODUCTION.md").read_text() == (ROOT / "REPRODUCTION.md").read_text()
    figs = tmp_path / "docs" / "reproduction"
    assert (figs / "tradeoff_over_f.png").stat().st_size > 10_000
    for task in ("copy", "denoising"):
        assert (figs / task / "report.md").is_file()
        assert (figs / task / "success_vs_length.png").stat().st_size > 10_000


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
    argv = ["--out", str(tmp_path / "R.md"), "--figures", str(figures), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not figures.exists() and not (tmp_path / "R.md").exists()


def test_the_repository_s_reproduction_is_never_overwritten_by_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.reproduction as cli
    seen = {}

    def fake_write(trials, curves, meta, out, figures, threshold, **_):  # noqa: ANN001
        seen.update(out=out, figures=figures, rows=len(trials))
        return out
    monkeypatch.setattr(cli, "write", fake_write)
    monkeypatch.chdir(tmp_path)
    assert cli.main([]) == 0
    assert seen["rows"] == 1440  # the committed study
    assert seen["out"] == Path("results") / "study_cpu" / "reproduction" / "REPRODUCTION.md"
    assert seen["figures"] == seen["out"].parent / "figures"
    assert not (tmp_path / "REPRODUCTION.md").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--tables", "nowhere"], "--tables nowhere lacks trials.parquet"),
    (["--tables", "x", "--results", "y"], "not both")])
def test_bad_sources_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str],
                            expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
