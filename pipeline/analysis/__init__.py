"""The results and what is read from them: pandas, pyarrow and matplotlib, no torch, no Ray.

``results`` (the Parquet tables and their schemas), ``stats`` (intervals, memory horizon, Pareto
front, nuisance selection), ``figures``, ``report`` (``report.md`` with its figures) and ``claims``
(the paper's claims checked, ``REPRODUCTION.md``).
"""
