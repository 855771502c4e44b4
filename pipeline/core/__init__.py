"""The method itself, in torch and numpy alone: no Ray, no Optuna, no pandas, no files written.

``config`` (the typed, frozen trial config), ``seeding`` and ``device``, ``tasks``, ``cells`` (with
their recurrences in :mod:`pipeline.core.scans`), ``model`` (the parallel network),
``multistability`` (VAA, VAA*, state sampling), ``warmup``, ``train``, ``replicas`` (several seeds
in lockstep) and ``trial`` (one trial, start to record). docs/method.md is the specification.
"""
