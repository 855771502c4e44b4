"""Registry of named sweeps. Adding a sweep means adding one module here that defines ``SPACE``.

``get("copy_task")`` returns a :class:`SearchSpace`; a name of the form ``module:attribute`` loads a
space defined elsewhere (tests, private sweeps).
"""

from __future__ import annotations

import importlib
import pkgutil

from search_spaces.space import SearchSpace

__all__ = ["SearchSpace", "get", "names"]

_NOT_SPACES = {"space", "protocol"}


def names() -> list[str]:
    """The names of the spaces shipped in this package, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if m.name not in _NOT_SPACES and not m.name.startswith("_"))


def get(name: str) -> SearchSpace:
    """The space called ``name`` (or ``module:attribute``).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            space = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load space {name!r}: {exc}") from None
    elif name in names():
        space = importlib.import_module(f"search_spaces.{name}").SPACE
        if isinstance(space, SearchSpace) and space.name != name:
            raise ValueError(f"search_spaces/{name}.py defines a space named {space.name!r}: a "
                             f"copied file needs its own name (name={name!r}), or it would write "
                             f"into results/{space.name}")
    else:
        from pipeline.core.config import did_you_mean
        raise ValueError(f"unknown space {name!r}{did_you_mean(name, names())}; valid spaces: "
                         f"{', '.join(names())}")
    if not isinstance(space, SearchSpace):
        raise ValueError(f"{name!r} is not a SearchSpace")
    return space
