"""The estimators of which tasks to learn together, one module each, found by name.

`get_method(name)` returns the registered `Method` (`base.py`: the interface
and the registry); `method_names()` lists them. exhaustive (`exhaustive.py`),
esa, hoa, lookahead (the corrected lookahead, calibrated into losses),
surrogate (a linear model fitted to a random sample of subsets), quick (the
singles and the all-task network on a short schedule, the surrogate's model), tag and cs
(`tag.py`; cs shares tag's run).
"""

from grouping.methods.base import (  # noqa: F401
    ESA_FRACTION,
    QUICK_FRACTION,
    SURROGATE_SAMPLES,
    Cost,
    Estimate,
    Method,
    MethodSettings,
    get_method,
    method_names,
)
