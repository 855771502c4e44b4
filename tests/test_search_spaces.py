"""The search-space registry and grids (no Ray, no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import search_spaces
from pipeline.core.config import TrialConfig
from search_spaces.space import LogUniform, estimate_core_hours, point_key


def test_registry_lists_the_shipped_spaces() -> None:
    assert search_spaces.names() == ["copy_cpu", "copy_task", "denoising", "seq_mnist", "study_cpu"]
    for name in search_spaces.names():
        space = search_spaces.get(name)
        assert space.name == name
        space.check()


def test_unknown_space_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown space 'nope'.*copy_task, denoising, seq_mnist"):
        search_spaces.get("nope")


def test_a_space_can_live_outside_the_package() -> None:
    assert search_spaces.get("tests.analytic:SPACE").name == "analytic"
    with pytest.raises(ValueError, match="cannot load space"):
        search_spaces.get("no_such_module:SPACE")


def test_copy_task_grid_collapses_the_fraction_without_warmup() -> None:
    space = search_spaces.get("copy_task")
    points = space.points()
    # 4 cells x 3 lengths x (1 cold + 2 step counts x 4 fractions)
    assert len(points) == 4 * 3 * (1 + 2 * 4) == 108
    assert len({point_key(p) for p in points}) == len(points)
    cold = [p for p in points if p["warmup.steps"] == 0]
    assert len(cold) == 12 and {p["warmup.fraction"] for p in cold} == {0.0}
    assert space.nuisance == {"train.lr": LogUniform(1e-4, 3e-3)}
    assert space.metric == "valid_loss" and space.mode == "min"
    space.validate()


def test_every_space_declares_roles_in_canonical_keys() -> None:
    keys = set(TrialConfig.keys())
    for name in search_spaces.names():
        space = search_spaces.get(name)
        for group in (space.scientific, space.nuisance, space.fixed):
            assert set(group) <= keys
        assert space.seeds >= 1 and space.samples_per_point >= 1


def test_smoke_versions_are_small_and_valid() -> None:
    for name in ("copy_task", "denoising"):
        smoke = search_spaces.get(name).smoke_version()
        smoke.validate()
        assert len(smoke.points()) * smoke.samples_per_point <= 40
        assert smoke.fixed["model.hidden_size"] <= 16


def test_seq_mnist_needs_a_data_folder() -> None:
    space = search_spaces.get("seq_mnist")
    with pytest.raises(ValueError, match="task.data_dir"):
        space.validate()
    space.with_sets({"task.data_dir": "/some/where"}).validate()
    assert set(space.scientific) >= {"task.pad", "model.cell"}
    assert space.scientific["task.pad"] == (0, 200, 500)


def test_set_pins_scientific_untunes_nuisance_and_fixes_others() -> None:
    space = search_spaces.get("copy_task").with_sets(
        {"model.cell": "gru", "train.lr": "1e-3", "model.hidden_size": "32", "replicas": "2"})
    assert space.scientific["model.cell"] == ("gru",)
    assert "train.lr" not in space.nuisance and space.fixed["train.lr"] == 1e-3
    assert space.fixed["model.hidden_size"] == 32
    assert len(space.points()) == 3 * 9
    cfg = space.trial_config(space.points()[0], {}, seed=5)
    assert cfg["replicas"] == 2 and cfg["seed"] == 5 and cfg["train.lr"] == 1e-3
    TrialConfig.from_dict(cfg)


@pytest.mark.parametrize("sets, match", [({"model.celll": "gru"}, "unknown config key"),
                                         ({"model.hidden_size": "big"}, "model.hidden_size")])
def test_bad_sets_name_the_key(sets: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        search_spaces.get("copy_task").with_sets(sets)


def test_bad_value_inside_the_grid_is_caught_by_validate() -> None:
    space = search_spaces.get("copy_task").with_sets({"warmup.fraction": "1.5"})
    with pytest.raises(ValueError, match="warmup.fraction"):
        space.validate()


def test_cost_estimate_grows_with_the_protocol() -> None:
    full = estimate_core_hours(search_spaces.get("copy_task"))
    smoke = estimate_core_hours(search_spaces.get("copy_task").smoke_version())
    assert 0 < smoke < 0.1 < full


def test_a_copied_space_file_must_carry_its_own_name() -> None:
    import search_spaces
    folder = Path(search_spaces.__file__).parent
    copy = folder / "zz_copy_test.py"
    copy.write_text((folder / "copy_task.py").read_text())  # name="copy_task" left as it was
    try:
        with pytest.raises(ValueError, match="defines a space named 'copy_task'"):
            search_spaces.get("zz_copy_test")
    finally:
        copy.unlink()
        sys.modules.pop("search_spaces.zz_copy_test", None)


def test_smoke_keeps_the_space_s_own_cells() -> None:
    import dataclasses

    import search_spaces
    base = search_spaces.get("copy_task")  # smoke block: gru, brc; T 10, 20
    mine = dataclasses.replace(base, name="mgu_copy",
                               scientific={**base.scientific, "model.cell": ("mgu", "lstm")})
    smoke = mine.smoke_version()
    assert smoke.scientific["model.cell"] == ("mgu", "lstm")  # not the copied gru, brc
    assert smoke.scientific["task.seq_len"] == (10, 20)       # numbers: the smoke's own
    assert base.smoke_version().scientific["model.cell"] == ("gru", "brc")
