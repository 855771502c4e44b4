"""Report tests on a small synthetic results table whose statistics are worked out by hand."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from pipeline import report as report_cli
from pipeline.analysis import report, stats

# The half-width of a 95% CI from three seeds whose errors are m - 0.01, m, m + 0.01:
# s = 0.01, t_{0.975,2} = 4.302653, half = 4.302653 * 0.01 / sqrt(3) = 0.0248414.
HALF3 = 4.302653 * 0.01 / math.sqrt(3)

# Mean test MSE at T = 10, 20, 40 of the good learning rate (1e-3), per (cell, steps, fraction).
# With threshold 0.1, by hand:            memory  precision (error at T = 10)
MEANS = {
    ("gru", 0, 0.0): (0.02, 0.50, 0.90),  # 10      0.02   on the front (best precision)
    ("gru", 5, 0.5): (0.03, 0.05, 0.60),  # 20      0.03   dominated by brc f=0.5
    ("gru", 5, 1.0): (0.08, 0.06, 0.09),  # 40      0.08   dominated by brc f=0.5
    ("brc", 0, 0.0): (0.04, 0.30, 0.90),  # 10      0.04   dominated by gru cold
    ("brc", 5, 0.5): (0.03, 0.04, 0.05),  # 40      0.03   on the front (best memory)
    ("brc", 5, 1.0): (0.20, 0.20, 0.20),  # 0       0.20   dominated
}
LENGTHS = (10, 20, 40)
MEMORY = {("gru", "cold"): 10, ("gru", "f=0.5, 5 steps"): 20, ("gru", "f=1, 5 steps"): 40,
          ("brc", "cold"): 10, ("brc", "f=0.5, 5 steps"): 40, ("brc", "f=1, 5 steps"): 0}
FRONT = {("gru", "cold"), ("brc", "f=0.5, 5 steps")}


def _trial(i: int, exp: str, cell: str, steps: int, frac: float, T: int, seed: int, lr: float,
           err: float, valid: float, status: str = "completed") -> dict:
    err = round(err, 9)  # exact ties stay ties after 1 - err (the VAA below)
    point = f"{cell}|{T}|{steps}|{frac if steps else 0}"  # pipeline.analysis.results calls it "point"
    return {"space": "toy", "experiment": exp, "trial_id": f"{exp}-t{i}", "point": point,
            "status": status, "task.name": "copy", "task.seq_len": T, "task.pad": None,
            "model.cell": cell, "model.hidden_size": 8, "warmup.steps": steps,
            "warmup.fraction": frac, "train.lr": lr, "seed": seed, "n_params": 100,
            "vaa_init": 0.01, "vaa_warm": 1.0 - err, "best_valid_loss": valid, "test_loss": err,
            "test_accuracy": None, "epochs_run": 3, "error": None}


def _tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = []
    for (cell, steps, frac), means in MEANS.items():
        # A cold network's fraction is irrelevant: write 0.5 / 1.0 there; the report ignores it.
        table_frac = frac if steps else 1.0
        for T, m in zip(LENGTHS, means, strict=True):
            for seed, off in enumerate((-0.01, 0.0, 0.01)):
                point = {"cell": cell, "steps": steps, "frac": table_frac, "T": T, "seed": seed}
                rows.append(point | {"lr": 1e-3, "err": m + off, "valid": m + off})
                # A worse learning rate by validation, though better on test: never selected.
                rows.append(point | {"lr": 1e-2, "err": (m + off) / 2, "valid": m + 1.0})
    trials = [_trial(i, "exp1", **r) for i, r in enumerate(rows)]
    n = len(trials)
    # Not completed: counted, never in the statistics (their numbers would shift the means).
    trials.append(_trial(n, "exp1", "gru", 5, 1.0, 40, 7, 1e-3, 0.0, 0.0, "pruned"))
    trials.append(_trial(n + 1, "exp1", "gru", 5, 1.0, 40, 8, 1e-3, math.nan, math.nan,
                         "diverged") | {"error": "NaN loss in epoch 2"})
    trials.append(_trial(n + 2, "exp1", "brc", 0, 0.5, 10, 9, 1e-3, math.nan, math.nan, "error")
                  | {"error": "RuntimeError: boom"})
    # Another experiment of the same space, excluded by --experiment exp1.
    trials.append(_trial(n + 3, "exp2", "gru", 0, 0.5, 10, 0, 1e-3, 5.0, 0.001))
    t = pd.DataFrame(trials)
    curves = []
    for r in t.itertuples(index=False):
        curves.append({"experiment": r.experiment, "trial_id": r.trial_id, "phase": "warmup",
                       "step": 0, "train_loss": None, "valid_loss": None, "vaa_star": 0.5})
        for epoch in range(3):
            curves.append({"experiment": r.experiment, "trial_id": r.trial_id, "phase": "train",
                           "step": epoch, "train_loss": 1.0 / (epoch + 1),
                           "valid_loss": r.best_valid_loss + 0.5 * (2 - epoch), "vaa_star": None})
    return t, pd.DataFrame(curves)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    trials, curves = _tables()
    for name, df in (("trials", trials), ("curves", curves)):
        (tmp_path / "toy" / name).mkdir(parents=True)
        df.to_parquet(tmp_path / "toy" / name / "part-0.parquet", index=False)
    return tmp_path


# ------------------------------------------------------------------------------ pure statistics
def test_t_quantiles_match_the_printed_table() -> None:
    for df, q in [(1, 12.7062), (2, 4.3027), (3, 3.1824), (10, 2.2281), (30, 2.0423)]:
        assert stats.t_ppf(0.975, df) == pytest.approx(q, abs=1e-4)
    assert stats.t_ppf(0.975, 1e7) == pytest.approx(1.95996, abs=1e-4)
    assert stats.t_ppf(0.025, 2) == pytest.approx(-4.3027, abs=1e-4)


def test_ci95_by_hand() -> None:
    mean, half, n = stats.ci95([1.0, 2.0, 3.0])  # s = 1: half = 4.3027 / sqrt(3)
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302653 * 1 / math.sqrt(3), abs=1e-5)
    assert half == pytest.approx(2.484, abs=1e-3)
    mean, half, n = stats.ci95([5.0, math.nan])  # one seed: no interval
    assert (mean, n) == (5.0, 1) and math.isnan(half)
    assert stats.ci95([])[2] == 0


def test_majority_horizon_and_permutation_p_by_hand() -> None:
    assert stats.majority_horizon([10, 20, 40], [5, 3, 2], [5, 5, 5]) == 20  # 3 of 5, not 2
    assert stats.majority_horizon([10, 20], [1, 1], [2, 2]) == 0  # half is not most
    assert stats.majority_horizon([10, 20, 40], [2, 0, 2], [3, 3, 3]) == 40  # literally longest
    # every value of one group above every value of the other: 2 of C(10, 5) = 252 splits
    assert stats.permutation_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert stats.permutation_p([1, 2], [1, 2]) == 1.0
    assert math.isnan(stats.permutation_p([], [1.0]))
    # {0, 0, 1} against {1, 1}, observed |1/3 - 1| = 2/3. The C(5, 3) = 10 splits of
    # {0, 0, 1, 1, 1}: 3 hold both zeros (2/3), 6 hold one zero (|2/3 - 1/2| = 1/6), 1 holds
    # none (|1 - 0| = 1): 4 of 10 are as extreme.
    assert stats.permutation_p([0.0, 0.0, 1.0], [1.0, 1.0]) == pytest.approx(0.4)
    # beyond `draws` splits it samples, seeded: the same answer twice
    big = (list(range(20)), list(range(5, 25)))
    assert stats.permutation_p(*big, draws=500) == stats.permutation_p(*big, draws=500)


def test_memory_horizon_by_hand() -> None:
    assert stats.memory_horizon([10, 20, 40], [0.05, 0.08, 0.5]) == 20
    assert stats.memory_horizon([10, 20, 40], [0.05, 0.08, 0.09]) == 40
    assert stats.memory_horizon([10, 20, 40], [0.5, 0.6, 0.7]) == 0
    assert stats.memory_horizon([10, 20, 40], [0.05, 0.3, 0.05]) == 40  # literally the longest
    assert stats.memory_horizon([10, 20], [0.05, math.nan]) == 10
    assert stats.memory_horizon([10, 20], [0.05, 0.15], threshold=0.2) == 20
    assert stats.memory_horizon([10], [0.1]) == 0  # strictly below the threshold


def test_pareto_front_by_hand() -> None:
    memory = [10, 20, 20, 40, 40, 0, math.nan]
    error = [0.01, 0.05, 0.03, 0.08, 0.09, 0.001, 0.0]
    # (10, .01) front; (20, .05) dominated by (20, .03); (40, .09) dominated by (40, .08);
    # (0, .001) front (best error); NaN never on the front.
    expected = [True, False, True, True, False, True, False]
    assert stats.pareto_front(memory, error).tolist() == expected
    assert stats.pareto_front([1, 1], [0.5, 0.5]).tolist() == [True, True]  # ties: both


def test_spearman_by_hand() -> None:
    rho, n = stats.spearman([1, 2, 3, 4], [1, 3, 2, 4])  # 1 - 6 * 2 / (4 * 15) = 0.8
    assert n == 4 and rho == pytest.approx(0.8)
    assert stats.spearman([1, 2, 3], [30, 20, 10])[0] == pytest.approx(-1.0)
    # Ties take average ranks: x ranks (1, 2.5, 2.5, 4) against y ranks (1, 2, 3, 4).
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.arange(1, 5)
    assert stats.spearman([1, 2, 2, 3], [1, 2, 3, 4])[0] == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert math.isnan(stats.spearman([1, 2], [1, 2])[0])
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3])[0])


# ------------------------------------------------------------------------------ the tables
def _analysis(select: str = "best") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    trials, _ = _tables()
    df = report.prepare(trials[trials["experiment"] == "exp1"])
    completed = df[df["status"] == "completed"]
    nuisance = stats.nuisance_keys(completed)
    assert nuisance == ["train.lr"]
    selected, settings = stats.select_settings(completed, nuisance, select=select)
    return selected, settings, stats.point_table(selected)


def test_selection_uses_validation_and_completed_trials_only() -> None:
    selected, settings, points = _analysis()
    assert set(selected["train.lr"]) == {1e-3}
    assert (settings["setting"] == "train.lr=0.001").all()
    assert (settings["settings_tried"] == 2).all() and (settings["seeds"] == 3).all()
    assert len(points) == 6 * 3 and (points["n"] == 3).all()
    for (cell, steps, frac), means in MEANS.items():
        for T, m in zip(LENGTHS, means, strict=True):
            row = points[(points["model.cell"] == cell) & (points["arm_steps"] == steps)
                         & (points["arm_fraction"] == frac) & (points["length"] == T)]
            assert len(row) == 1
            assert row["mean"].iloc[0] == pytest.approx(m)
            assert row["half"].iloc[0] == pytest.approx(HALF3, rel=1e-5)
    _, _, pooled = _analysis("all")
    assert (pooled["n"] == 6).all()


def test_a_scientific_key_not_on_the_axes_is_named_not_tuned_over() -> None:
    trials, _ = _tables()
    trials = trials[trials["experiment"] == "exp1"].copy()
    wide = trials.assign(**{"model.hidden_size": 16, "trial_id": trials["trial_id"] + "w"})
    wide["point"] = wide["point"] + "|16"
    df = report.prepare(pd.concat([trials, wide]))
    completed = df[df["status"] == "completed"]
    assert stats.nuisance_keys(completed) == ["train.lr"]
    assert stats.hidden_scientific_keys(completed) == ["model.hidden_size"]
    _, settings = stats.select_settings(completed, ["train.lr", "model.hidden_size"])
    assert (settings["settings_tried"] == 4).all()
    assert settings["setting"].str.startswith("train.lr=0.001, model.hidden_size=").all()


def test_mnist_length_is_the_padding_and_error_the_error_rate() -> None:
    trials, _ = _tables()
    mnist = trials.head(3).assign(**{"task.name": "seq_mnist", "task.seq_len": 784,
                                     "task.pad": [None, 200, 500], "test_accuracy": 0.9,
                                     "test_loss": 0.3})
    df = report.prepare(mnist)
    assert df["length"].tolist() == [0.0, 200.0, 500.0]
    assert df["test_error"].to_numpy() == pytest.approx(0.1)
    assert report.prepare(trials.head(1))["test_error"].iloc[0] == trials["test_loss"].iloc[0]


def test_cold_rows_form_one_arm_whatever_their_fraction() -> None:
    trials, _ = _tables()
    df = report.prepare(trials)
    cold = df[df["warmup.steps"] == 0]
    assert set(cold["warmup.fraction"]) == {0.5, 1.0} and set(cold["arm_fraction"]) == {0.0}
    assert set(cold["arm"]) == {"cold"}


def test_tradeoff_memory_precision_and_front_by_hand() -> None:
    selected, _, _ = _analysis()
    trade = stats.tradeoff_table(selected, threshold=0.1)
    assert len(trade) == 6
    for r in trade.itertuples(index=False):
        cell, arm = r[1], r.arm
        assert r.memory == MEMORY[(cell, arm)], (cell, arm)
        assert ((cell, arm) in FRONT) == bool(r.pareto), (cell, arm)
    prec = {(r[1], r.arm): r.precision for r in trade.itertuples(index=False)}
    assert prec[("gru", "cold")] == pytest.approx(0.02)
    assert prec[("gru", "f=1, 5 steps")] == pytest.approx(0.08)  # median of 0.07, 0.08, 0.09
    assert math.isnan(prec[("brc", "f=1, 5 steps")])  # no seed learned at T = 10
    # gru f=1 at T = 40 (0.08, 0.09, 0.10): 2 of 3 seeds learned, a majority
    assert trade.set_index(["model.cell", "arm"]).loc[("gru", "f=1, 5 steps"), "memory"] == 40
    # A looser threshold lengthens memory: gru cold stays at 10, gru f=0.5 now learns T = 40.
    loose = stats.tradeoff_table(selected, threshold=0.65)
    assert loose.set_index(["model.cell", "arm"]).loc[("gru", "f=0.5, 5 steps"), "memory"] == 40


def test_vaa_correlation_is_minus_one_when_vaa_orders_errors() -> None:
    trials, _ = _tables()
    df = report.prepare(trials[trials["experiment"] == "exp1"])
    table = stats.vaa_table(df[df["status"] == "completed"])
    assert len(table) == 2 * 3 + 3
    assert table["spearman_rho"].to_numpy() == pytest.approx(-1.0)


# ------------------------------------------------------------------------------ the CLI
def _assert_not_blank(png: Path) -> None:
    img = imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.02, png


def test_cli_writes_report_and_figures(results: Path, capsys: pytest.CaptureFixture) -> None:
    out = results / "out"
    code = report_cli.main(["--space", "toy", "--results", str(results), "--experiment", "exp1",
                        "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    text = (out / "report.md").read_text()
    for name in ["success_vs_length", "overview", "error_vs_length", "tradeoff", "vaa_vs_error",
                 "learning_curves"]:
        assert f"({name}.png)" in text
        _assert_not_blank(out / f"{name}.png")
    assert "threshold **0.1**" in text and "Student-t" in text and "Memory horizon" in text
    assert "NaN loss in epoch 2" in text and "RuntimeError: boom" in text
    assert "`exp2`" not in text
    counts = text.split("## Trial counts")[1].split("##")[0]
    assert "| all |  | 108 | 1 | 1 | 1 |" in counts  # completed, pruned, diverged, error


def test_duplicate_rows_from_an_interrupted_compaction_count_once(results: Path) -> None:
    trials, _ = _tables()
    trials.tail(5).to_parquet(results / "toy" / "trials" / "part-1.parquet", index=False)
    loaded = report.load_table(results, "toy", "trials")
    assert len(loaded) == len(trials)


def test_cli_default_pools_experiments_and_out_folder(results: Path) -> None:
    assert report_cli.main(["--space", "toy", "--results", str(results)]) == 0
    text = (results / "toy" / "report" / "report.md").read_text()
    assert "`exp1`" in text and "`exp2`" in text


def test_cli_with_nothing_to_plot_still_draws_every_figure(tmp_path: Path) -> None:
    trials, curves = _tables()
    trials["status"] = "pruned"
    for name, df in (("trials", trials), ("curves", curves)):
        (tmp_path / "toy" / name).mkdir(parents=True)
        df.to_parquet(tmp_path / "toy" / name / "p.parquet", index=False)
    assert report_cli.main(["--space", "toy", "--results", str(tmp_path)]) == 0
    for png in (tmp_path / "toy" / "report").glob("*.png"):
        _assert_not_blank(png)
    assert len(list((tmp_path / "toy" / "report").glob("*.png"))) == 6


@pytest.mark.parametrize("case", ["no_space", "no_curves", "empty_trials", "unknown_experiment",
                                  "corrupt", "bad_threshold", "no_cell_column", "nan_threshold",
                                  "out_is_file", "space_is_path"])
def test_bad_input_gives_one_line_and_exit_2(results: Path, case: str,
                                             capsys: pytest.CaptureFixture) -> None:
    argv = ["--space", "toy", "--results", str(results)]
    expected = {"no_space": "no trials table", "no_curves": "no curves table",
                "empty_trials": "trials table", "unknown_experiment": "nope",
                "corrupt": "cannot read the trials table", "bad_threshold": "--threshold",
                "no_cell_column": "lacks column(s) model.cell",
                "nan_threshold": "--threshold must be a finite", "out_is_file": "cannot be created",
                "space_is_path": "not a path"}[case]
    if case == "no_space":
        argv[1] = "missing"
    elif case == "no_curves":
        for f in (results / "toy" / "curves").iterdir():
            f.unlink()
        (results / "toy" / "curves").rmdir()
    elif case == "empty_trials":
        trials, _ = _tables()
        trials.iloc[:0].to_parquet(results / "toy" / "trials" / "part-0.parquet", index=False)
    elif case == "unknown_experiment":
        argv += ["--experiment", "nope"]
    elif case == "corrupt":
        (results / "toy" / "trials" / "part-0.parquet").write_bytes(b"not parquet at all")
    elif case == "bad_threshold":
        argv += ["--threshold", "0"]
    elif case == "nan_threshold":
        argv += ["--threshold", "nan"]
    elif case == "out_is_file":
        (results / "afile").write_text("x")
        argv += ["--out", str(results / "afile" / "report")]
    elif case == "space_is_path":
        argv[1] = "../toy"  # would escape --results
    else:
        trials, _ = _tables()
        trials.drop(columns=["model.cell"]).to_parquet(
            results / "toy" / "trials" / "part-0.parquet", index=False)
    before = sorted(results.rglob("*"))
    assert report_cli.main(argv) == 2
    assert sorted(results.rglob("*")) == before  # nothing written
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and err.startswith("pipeline.report: error:")
    if case == "empty_trials":
        assert "is empty" in err


def test_report_imports_neither_torch_nor_ray() -> None:
    code = ("import sys, pipeline.report; "
            "bad = [m for m in ('torch', 'ray', 'optuna') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parents[2])


def test_two_protocols_are_never_pooled_and_smoke_runs_kept_apart(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trials, curves = _tables()
    small = trials["experiment"] == "exp2"
    trials["protocol"] = "aaaa"
    trials.loc[small, "protocol"] = "bbbb"
    trials["model.hidden_size"] = 256
    trials.loc[small, "model.hidden_size"] = 8
    trials["smoke"] = False
    smoke = trials.head(3).assign(experiment="smk", protocol="cccc", smoke=True)
    for name, df in (("trials", pd.concat([trials, smoke])), ("curves", curves)):
        (tmp_path / "toy" / name).mkdir(parents=True)
        df.to_parquet(tmp_path / "toy" / name / "part-0.parquet", index=False)
    argv = ["--space", "toy", "--results", str(tmp_path)]
    assert report_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mix 2 protocols" in err  # the smoke run is not a third
    assert "aaaa (experiments exp1; model.hidden_size=256)" in err
    assert "bbbb (experiments exp2; model.hidden_size=8)" in err
    assert report_cli.main([*argv, "--protocol", "bbbb"]) == 0, capsys.readouterr().err
    text = (tmp_path / "toy" / "report" / "report.md").read_text()
    assert "`exp2`" in text and "`exp1`" not in text
    picked = report.one_protocol(pd.concat([trials, smoke]), smoke=True)
    assert set(picked["experiment"]) == {"smk"}
    with pytest.raises(ValueError, match="only smoke runs: pass --smoke"):
        report.one_protocol(smoke)


def test_every_figure_is_written_non_blank_with_labelled_axes(
        results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure
    drawn: list[tuple[str, Figure]] = []
    real = Figure.savefig

    def savefig(self: Figure, path: object, *args: object, **kw: object) -> None:
        drawn.append((Path(str(path)).name, self))
        real(self, path, *args, **kw)
    monkeypatch.setattr(Figure, "savefig", savefig)
    out = results / "figs"
    assert report_cli.main(["--space", "toy", "--results", str(results), "--out", str(out)]) == 0
    names = sorted(n for n, _ in drawn)
    assert names == sorted(["success_vs_length.png", "overview.png", "error_vs_length.png",
                            "tradeoff.png", "vaa_vs_error.png", "learning_curves.png"])
    for name, fig in drawn:
        _assert_not_blank(out / name)
        assert fig._suptitle is not None and fig._suptitle.get_text(), name
        panels = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
        assert panels, name
        for ax in panels:
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), (name, ax)
    success = dict(drawn)["success_vs_length.png"]
    assert all(ax.get_ylim() == (-0.05, 1.05) for ax in success.axes if ax.axison)
    trade = dict(drawn)["tradeoff.png"]
    assert any("Pareto front" in t.get_text() for ax in trade.axes if ax.get_legend()
               for t in ax.get_legend().get_texts())
    errors = dict(drawn)["error_vs_length.png"]
    assert any("threshold 0.1" in t.get_text() for ax in errors.axes if ax.get_legend()
               for t in ax.get_legend().get_texts())


def test_wilson_interval_by_hand() -> None:
    share, low, high = stats.wilson(0, 5)
    assert share == 0 and low == 0 and high == pytest.approx(0.4345, abs=1e-4)
    share, low, high = stats.wilson(3, 10)
    assert share == 0.3 and (low, high) == (pytest.approx(0.1078, abs=1e-4),
                                            pytest.approx(0.6032, abs=1e-4))


def test_a_scientific_key_the_report_does_not_draw_is_never_chosen_over(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trials, curves = _tables()
    trials = trials[trials["experiment"] == "exp1"]
    wide = trials.assign(**{"model.hidden_size": 16, "trial_id": trials["trial_id"] + "w",
                            "point": trials["point"].astype(str) + ",model.hidden_size=16"})
    both = pd.concat([trials, wide])
    for name, df in (("trials", both), ("curves", curves)):
        (tmp_path / "toy" / name).mkdir(parents=True)
        df.to_parquet(tmp_path / "toy" / name / "p.parquet", index=False)
    argv = ["--space", "toy", "--results", str(tmp_path)]
    assert report_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "varies model.hidden_size" in err and "--where KEY=VALUE" in err
    assert report_cli.main([*argv, "--where", "model.hidden_size=16"]) == 0
    text = (tmp_path / "toy" / "report" / "report.md").read_text()
    assert "model.hidden_size=" not in text.split("## Best nuisance settings")[1]


def test_a_hidden_padding_in_denoising_is_named(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    trials, curves = _tables()
    trials = trials[trials["experiment"] == "exp1"].assign(**{"task.name": "denoising",
                                                               "task.pad": 5})
    wide = trials.assign(**{"task.pad": 9, "trial_id": trials["trial_id"] + "p",
                            "point": trials["point"].astype(str) + ",pad=9"})
    for name, df in (("trials", pd.concat([trials, wide])), ("curves", curves)):
        (tmp_path / "toy" / name).mkdir(parents=True)
        df.to_parquet(tmp_path / "toy" / name / "p.parquet", index=False)
    assert report_cli.main(["--space", "toy", "--results", str(tmp_path)]) == 2
    assert "varies task.pad" in capsys.readouterr().err
