"""The layers are the packages: every module of a layer, found by walking its package, imports
nothing of the layers above it (nor their heavy libraries). A new module cannot escape the check."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(pipeline.__file__).parent

FORBIDDEN = {
    "pipeline.core": ["ray", "optuna", "pandas", "pyarrow", "matplotlib", "pipeline.orchestration",
                      "pipeline.analysis", "search_spaces"],
    "pipeline.analysis": ["torch", "ray", "optuna", "pipeline.orchestration"],
}
"""What a fresh interpreter must not have loaded after importing every module of the layer."""


def modules(package: str) -> list[str]:
    """Every module under ``package`` (subpackages included), found on disk."""
    path = PACKAGE.joinpath(*package.split(".")[1:])
    found = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=package + "."):
        found.append(info.name)
    return sorted(found)


def loaded_after_import(names: list[str]) -> list[str]:
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_walk_finds_the_modules_of_each_layer() -> None:
    core, analysis = modules("pipeline.core"), modules("pipeline.analysis")
    assert {"pipeline.core.cells", "pipeline.core.scans.native", "pipeline.core.scans.engine",
            "pipeline.core.trial"} <= set(core)
    assert {"pipeline.analysis.results", "pipeline.analysis.report"} <= set(analysis)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_loads_nothing_above_it(layer: str) -> None:
    names = modules(layer)
    loaded = loaded_after_import(names)
    bad = sorted(m for m in loaded for f in FORBIDDEN[layer] if m == f or m.startswith(f + "."))
    if bad:  # name the module that pulled each one in
        culprits = {n: [m for m in loaded_after_import([n]) if m in bad] for n in names}
        raise AssertionError(f"{layer} loads {bad}: " + "; ".join(
            f"{n} -> {sorted(set(b))}" for n, b in culprits.items() if b))


def _imports(path: Path) -> set[str]:
    """Top-level names of every module a file imports (at any depth of its code)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_orchestration_and_the_sweep_command_import_ray_or_optuna() -> None:
    allowed = {PACKAGE / "sweep.py"}
    offenders = [str(p.relative_to(ROOT)) for p in sorted(PACKAGE.rglob("*.py"))
                 if "orchestration" not in p.parts and p not in allowed
                 and _imports(p) & {"ray", "optuna"}]
    assert not offenders, f"ray/optuna imported outside pipeline/orchestration: {offenders}"


def test_the_top_level_holds_the_commands_alone() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "report", "reproduction", "status", "sweep", "trial"]


def test_modules_moved_by_the_layout_still_import_under_their_old_names() -> None:
    """Tune pickles a searcher, scheduler and callbacks by module path: ``--resume`` of an
    experiment started before the layout unpickles them through the old names."""
    import importlib
    import pickle

    from pipeline.orchestration.scheduler import OptunaPruningScheduler

    for old, new in pipeline.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    # a pickle made before the move names the class by its old module (protocol 0 spells it out)
    old_pickle = pickle.dumps(OptunaPruningScheduler, protocol=0).replace(
        b"pipeline.orchestration.scheduler", b"pipeline.scheduler")
    assert b"pipeline.scheduler\n" in old_pickle
    assert pickle.loads(old_pickle) is OptunaPruningScheduler
