"""warmup-sweep: sweeps of the warm-up method for recurrent networks (arXiv 2106.01001).

The package is three layers, each a subpackage, importing only downwards:

- :mod:`pipeline.core`: the method in torch and numpy alone (config, tasks, cells and their
  scans, the parallel network, multistability, warm-up, training, one trial);
- :mod:`pipeline.orchestration`: the only modules that import Ray or Optuna (the session, the
  per-point searcher, the pruning scheduler, the trainable, the callbacks that write results);
- :mod:`pipeline.analysis`: pandas, pyarrow and matplotlib, no torch and no Ray (the results
  tables, statistics, figures, the report and the claims).

The command lines sit on top: ``python -m pipeline.sweep``, ``pipeline.trial``, ``pipeline.report``
and ``pipeline.reproduction``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

MOVED = {
    "pipeline.callbacks": "pipeline.orchestration.callbacks",
    "pipeline.searcher": "pipeline.orchestration.searcher",
    "pipeline.scheduler": "pipeline.orchestration.scheduler",
    "pipeline.trainable": "pipeline.orchestration.trainable",
    "pipeline.ray_session": "pipeline.orchestration.session",
    "pipeline.results": "pipeline.analysis.results",
    "pipeline.config": "pipeline.core.config",
}
"""Module paths from before the layout of packages, to where their code lives now: scripts and
notebooks that import the old names, and objects pickled under them, keep working. (``--resume``
itself reads no pickle: it plans from the Parquet rows and the Optuna journal.)"""


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module that now holds its code (the same module object,
    so classes unpickled through either name are one class)."""

    def find_spec(self, name: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when it was imported under its own name."""


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
