"""Ray Tune and Optuna around the core: the only modules that import them.

``session`` (connecting to Ray, resources), ``searcher`` (one Optuna study per scientific point),
``scheduler`` (pruning through those studies), ``trainable`` (a trial under Tune) and ``callbacks``
(rows written to the results tables, progress lines).
"""
