"""Grouping, balancing, or both: the ground truth's rows of networks trained with a balancing method.

A balancing method (`mtl.balancing`) changes how one network weighs its
tasks' losses; grouping changes which tasks share a network. The ground
truth (`grouping.groundtruth`) answers which pays off, at every budget b:

* ``balanced:<method>``: one all-task network trained with the method
  (cost 1, the same total at every budget of at least 1);
* ``both:<method>``: the optimal equal-weight grouping at b (exhaustive's
  choice on the validation losses, `grouping.groundtruth.choices`) with
  every multi-task network among its networks trained with the method.
  Single-task networks have one loss: balancing leaves them as they are,
  and they are the record's own. The grouping is not chosen again on the
  balanced networks' losses; each task counts the lowest test loss among
  the networks, as every choice is scored (`grouping.choose.score`).

One seed's record holds what these rows need: ``record["balanced"][method]``
the all-task network and ``record["balanced_groups"][method][label]`` every
other multi-task network of the optimal choices (label: the equal-weight
network's, "seg+depth"), each ``{"validation": {task: loss}, "test": {task:
loss}}``. A method is under "balanced_groups" once its networks were
collected (an empty dict when the only multi-task network was the all-task
one). Records without these entries simply lack the rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from grouping.choose import Choice, score
from grouping.objective import Objective
from grouping.runner import FULL_SIZE, NetSpec
from grouping.selection import network_label

#: Prefix of a balancing baseline's key in the evaluation ("balanced:mgda").
BALANCED = "balanced:"
#: Prefix of a "both" row's key: the optimal grouping with its multi-task networks balanced ("both:mgda").
BOTH = "both:"
SPLITS = ("validation", "test")


def balancing_in(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The balancing methods whose all-task network one seed's record holds (``record["balanced"]``)."""
    return tuple(record.get("balanced", {}))


def both_in(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The balancing methods whose "both" networks one seed's record holds (its all-task network under
    ``record["balanced"]`` and the optimal choices' other multi-task networks under ``"balanced_groups"``)."""
    return tuple(m for m in record.get("balanced_groups", {}) if m in record.get("balanced", {}))


def multitask_networks(choices: Sequence[Choice]) -> list[NetSpec]:
    """The distinct multi-task networks among `choices`' networks (equal-weight specs), in order of appearance."""
    return list(dict.fromkeys(s for c in choices for s in c.specs if len(s.tasks) > 1))


def balanced_losses(record: Mapping[str, Any], names: Sequence[str], method: str,
                    split: str = "test") -> dict[str, dict[str, float]]:
    """Equal-weight label -> per-task losses of every multi-task network the record holds trained with
    `method`: the all-task network (``record["balanced"]``) and the others (``record["balanced_groups"]``)."""
    out = {label: dict(losses[split]) for label, losses in record.get("balanced_groups", {}).get(method, {}).items()}
    if method in record.get("balanced", {}):
        out[network_label(tuple(names))] = dict(record["balanced"][method][split])
    return out


def collect_balanced(runner, methods: Sequence[str], networks: Sequence[NetSpec] | None = None,
                     record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Trains (or reads back from the store) the all-task network and each multi-task network of
    `networks` (the optimal choices' for "both") once per balancing method. Networks `record` (one
    seed's) already holds are taken from it, not trained again. Returns ``{"balanced": {method: {split:
    {task: loss}}}, "balanced_groups": {method: {label: {split: {task: loss}}}}, "seconds": {...}}``
    ("balanced_groups" only when `networks` is given, even empty; "seconds": "balancing" for all-task networks and
    "both" for the others, where any was trained)."""
    from mtl.balancing import get_method as get_balancing

    for m in methods:
        get_balancing(m)
    record = record or {}
    names = tuple(runner.names)
    together = NetSpec(names, FULL_SIZE)
    groups = [s for s in dict.fromkeys(NetSpec(s.tasks, FULL_SIZE) for s in networks or () if len(s.tasks) > 1)
              if s != together]
    known = {m: {split: balanced_losses(record, names, m, split) for split in SPLITS} for m in methods}
    todo = [NetSpec(s.tasks, s.size, m) for m in methods for s in [together, *groups]
            if s.label not in known[m]["test"]]
    start = len(runner.log)
    trained = runner.train(todo, phase="balancing")

    def losses(spec: NetSpec, m: str) -> dict[str, dict[str, float]]:
        if spec.label in known[m]["test"]:
            return {split: known[m][split][spec.label] for split in SPLITS}
        net = trained[NetSpec(spec.tasks, spec.size, m)]
        return {split: {t: net.loss(t, split) for t in spec.tasks} for split in SPLITS}

    out: dict[str, Any] = {"balanced": {m: losses(together, m) for m in methods}}
    if networks is not None:
        out["balanced_groups"] = {m: {s.label: losses(s, m) for s in groups} for m in methods}
    seconds: dict[str, list[float]] = {}
    for e in runner.log[start:]:
        if not e["reused"]:
            seconds.setdefault("balancing" if e["network"].split("@")[0] == together.label else "both",
                               []).append(e["seconds"])
    out["seconds"] = {k: math.fsum(v) for k, v in seconds.items()}
    return out


def balanced_rows(record: Mapping[str, Any], names: Sequence[str], budgets: Sequence[float], obj: Objective,
                  reference, methods: Sequence[str]) -> dict[str, list[float | None]]:
    """``{"balanced:<method>": its test total at every budget}``: one all-task network costs 1, so the
    same total at every budget of at least 1 (None below)."""
    out = {}
    for m in methods:
        total = obj.total({t: record["balanced"][m]["test"][t] for t in names}, reference)
        out[BALANCED + m] = [total if b >= 1 else None for b in budgets]
    return out


def both_specs(choice: Choice, method: str) -> list[NetSpec]:
    """`choice`'s networks with every multi-task one trained with `method` (single-task ones as they are)."""
    return [NetSpec(s.tasks, s.size, method) if len(s.tasks) > 1 else s for s in choice.specs]


def both_rows(record: Mapping[str, Any], names: Sequence[str], optimal: Sequence[Choice], obj: Objective,
              reference, methods: Sequence[str]) -> dict[str, list[float | None]]:
    """``{"both:<method>": test total at every budget}``: each of `optimal`'s choices (one per budget) with
    its multi-task networks' test losses those of the same networks trained with the method. None at a
    budget whose choice has a multi-task network the record lacks balanced (chosen at another budget list,
    objective or cost view than the one collected)."""
    out = {}
    for m in methods:
        balanced = balanced_losses(record, names, m)
        totals = []
        for c in optimal:
            multi = [s for s in c.specs if len(s.tasks) > 1]
            if any(s.label not in balanced for s in multi):
                totals.append(None)
                continue
            table = {**record["test"], **{NetSpec(s.tasks, s.size, m).label: balanced[s.label] for s in multi}}
            totals.append(score(both_specs(c, m), table, names, obj, reference))
        out[BOTH + m] = totals
    return out


def label(key: str) -> str | None:
    """A balancing row's name in tables and figures (None for other keys)."""
    if key.startswith(BALANCED):
        return f"one all-task network, {key[len(BALANCED):]} balancing"
    if key.startswith(BOTH):
        return f"optimal grouping, multi-task networks with {key[len(BOTH):]} balancing (both)"
    return None
