"""Task grouping for multi-task learning: which tasks should share a network.

Modules: ``affinity`` (TAG lookahead affinity and gradient cosine, measured
during training), ``lookahead`` (the corrected lookahead: AdamW's direction,
source-normalised steps, columns by self-affinity), ``runner`` (networks and
the affinity runs trained through ``store``, the SQLite results store),
``methods`` (the estimators exhaustive, esa, hoa, surrogate, lookahead, tag
and cs, one registered object each: what to train, what it predicts, what it
costs), ``objective`` (relative or summed loss), ``selection`` (exact network
selection: Standley et al. 2020, HOA) with ``selection_tag`` (TAG 2021's
grouping from an affinity matrix), ``tables`` (readers for loss tables and
affinity matrices), ``choose`` (choices, baselines and scoring),
``find_groups`` (the find_groups run), ``report``, ``report_text``,
``expectation`` and ``figures`` (its report.json, its tables and report.md,
the budget curve and what to expect, the plots) and ``groundtruth`` (how good
each estimator's choice is).
"""
