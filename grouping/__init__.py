"""Task grouping for multi-task learning: which tasks should share a network.

Modules: ``affinity`` (TAG lookahead affinity and gradient cosine, measured
during training), ``estimators`` (exhaustive, esa, hoa, tag, cs: what to
train and what it predicts), ``store`` (the SQLite results store),
``selection`` (exact network selection: Standley et al. 2020, TAG 2021,
HOA), ``tables`` (readers for loss tables and affinity matrices),
``report`` (find_groups: tables, report.json, plots).
"""
