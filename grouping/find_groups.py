"""The find_groups run: check the inputs, run an estimator, choose networks for every budget, verify, report.

`find_groups(options)` is what ``scripts/find_groups.py`` calls. The
estimator is a registered `grouping.methods.Method`, the choice and the
baselines come from `grouping.choose` under the objective of
`grouping.objective` (default ``relative``), the report from
`grouping.report`. Everything is written to the run directory (``--out``):
``store.sqlite`` (the results store; reruns reuse it), ``checkpoints/``
(orbax checkpoints of the network in training), and the report files.

``--verify`` trains the chosen networks, the baselines (all-in-one, one
per task, `VERIFY_RANDOM_SAMPLES` random groupings per budget, drawn
uniformly with ``numpy.random.default_rng(seed)``) and the full-size
single-task networks (the relative objective's references, the
"independent networks" of the per-task changes) with the full schedule,
and scores them on their test losses, each task counting the network
chosen for it on the predictions. ``--balance m`` adds, per method m, the
all-task network trained with m ("balancing") and the chosen networks with
every multi-task one trained with m ("both"): grouping, balancing, or both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from grouping.balanced import both_specs
from grouping.choose import (
    Baselines,
    Choice,
    baselines,
    choose,
    per_task_losses,
    score,
    task_changes,
)
from grouping.costs import DEFAULT_COST, CostTable, budget_text, check_cost_kind, cost_table, latency_settings
from grouping.methods import Estimate, Method, MethodSettings, get_method
from grouping.methods.base import ESA_FRACTION, QUICK_FRACTION, SURROGATE_SAMPLES
from grouping.selection import split_budgets
from grouping.objective import DEFAULT_OBJECTIVE, Objective, get_objective
from grouping.report import atomic_text, build_report, git_commit, run_settings, settings_differences, write_outputs
from grouping.report_text import format_table, format_timing
from grouping.dataspec import DataSpec
from grouping.runner import AFFINITY_EVERY, FULL_SIZE, NetSpec, Runner
from grouping.store import STORE_NAME, ResultsStore, canonical_json

#: The method find_groups runs when none is given (the lead measures and may change it).
DEFAULT_METHOD = "quick"
DEFAULT_STEPS = 500
#: --verify: random groupings trained per budget.
VERIFY_RANDOM_SAMPLES = 2


@dataclasses.dataclass
class Options:
    tasks: str | Sequence[str]
    budgets: Sequence[float]
    method: str = DEFAULT_METHOD
    objective: str = DEFAULT_OBJECTIVE
    cost: str = DEFAULT_COST  # what the budgets count: nominal, flops or latency (grouping.costs)
    latency_batch: int = 1  # --cost latency: images per timed forward batch
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    steps: int = DEFAULT_STEPS
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0
    out: str | os.PathLike = "runs/find_groups"
    verify: bool = False
    esa_fraction: float = ESA_FRACTION
    every: int = AFFINITY_EVERY
    samples: int = SURROGATE_SAMPLES  # surrogate: random subsets besides the singles and the all-task network
    quick_fraction: float = QUICK_FRACTION  # quick: fraction of the schedule of each of its networks
    checkpoint_every: int | None = None
    progress: bool = True
    ensemble: bool = True  # train several networks of one width as one ensemble (mtl.ensemble)
    devices: int | None = None  # ensembles: devices to shard over (None: all local ones)
    max_members: int | None = None  # ensembles: most networks per compiled program
    command: str | None = None
    overwrite: bool = False  # replace the report of other settings in `out` (see `check_out`)
    balance: Sequence[str] = ()  # --verify: also the all-task network trained with each (mtl.balancing)
    # Training loss weights, 'seg=3,depth=3' (TrainConfig.task_weights); '' none; None the label plan's
    # (data.labels: `tasks.label_plan.LabelPlan.task_weights`), none without one.
    task_weights: str | None = None

    @property
    def method_settings(self) -> MethodSettings:
        return MethodSettings(esa_fraction=self.esa_fraction, every=self.every, samples=self.samples,
                              quick_fraction=self.quick_fraction)


@dataclasses.dataclass
class Setup:
    """Validated inputs of a run: the method and objective, Task objects, their names,
    budgets, the full training configuration and the data settings (store keys)."""

    method: Method
    objective: Objective
    tasks: tuple
    names: tuple[str, ...]
    budgets: list[float]  # every budget asked for; the feasible ones are known once the costs are
    cfg: Any
    data_settings: dict[str, Any]
    costs: CostTable | None = None  # priced in `setup` unless latency, which needs the run's store

    def runner(self, opts: "Options", store: ResultsStore) -> Runner:
        return Runner(self.tasks, opts.data, self.cfg, opts.out, store, progress=opts.progress,
                      checkpoint_every=opts.checkpoint_every, data_settings=self.data_settings,
                      ensemble=opts.ensemble, devices=opts.devices, max_members=opts.max_members)


def setup(opts: Options) -> Setup:
    """Checks every input before any data is rendered or network trained (ValueError on bad input)."""
    from mtl import options
    from mtl.train import TrainConfig

    method = get_method(opts.method)
    objective = get_objective(opts.objective)
    tasks = opts.data.resolve_tasks(opts.tasks, min_tasks=2)
    names = tuple(t.name for t in tasks)
    budgets = [float(b) for b in opts.budgets]
    if not budgets:
        raise ValueError("no budget given")
    check_cost_kind(opts.cost)
    options.at_least("--latency-batch", opts.latency_batch, 1)
    options.check_training(steps=opts.steps, batch_size=opts.batch_size, lr=opts.learning_rate,
                           seed_value=opts.seed, data_seed=opts.data.seed, resolution=opts.data.resolution,
                           checkpoint_every=opts.checkpoint_every)
    for count in opts.data.counts or ():
        options.at_least("--counts (each of train, validation, test)", count, 1)
    options.fraction("--esa-fraction", opts.esa_fraction)
    options.fraction("--quick-fraction", opts.quick_fraction)
    options.at_least("--every", opts.every, 1)
    options.at_least("--surrogate-samples", opts.samples, 0)
    from mtl.balancing import get_method as get_balancing

    for b in opts.balance:
        get_balancing(b)
    if opts.balance and not opts.verify:
        raise ValueError("--balance adds balanced all-task networks to --verify's baselines: give --verify too")
    if opts.devices is not None:
        options.at_least("--devices", opts.devices, 1)
    if opts.max_members is not None:
        options.at_least("--max-members", opts.max_members, 1)
    method.validate(opts.method_settings)
    if opts.ensemble:
        from mtl.ensemble import ensemble_devices

        ensemble_devices(opts.devices)  # more devices than exist: a clear error now, not after the data
    from mtl.cli import task_weights_for

    cfg = TrainConfig(steps=opts.steps, batch_size=opts.batch_size, learning_rate=opts.learning_rate, seed=opts.seed,
                      task_weights=task_weights_for(opts.data.labels, opts.task_weights, tasks))
    data_settings = opts.data.check(tasks)
    costs = None
    if opts.cost != "latency":  # FLOPs need no device time: price the networks now (after every cheaper
        # check), and refuse a list with no feasible budget
        costs = cost_table(names, opts.cost, resolution=opts.data.resolution, source=opts.data.kind)
        split_budgets(budgets, costs.minimum_budget())
    return Setup(method, objective, tasks, names, budgets, cfg, data_settings, costs)


def find_groups(opts: Options, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole run; returns the report (also written to opts.out)."""
    t_start = time.perf_counter()
    s = setup(opts)
    method, names, budgets, settings = s.method, s.names, s.budgets, opts.method_settings
    out = Path(opts.out)
    check_out(out, run_settings(opts, method, s.objective, names, s.cfg, s.data_settings), opts.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with ResultsStore(out / STORE_NAME) as store:
        costs = s.costs or cost_table(names, opts.cost, resolution=opts.data.resolution,
                                      latency_batch=opts.latency_batch, store=store, progress=opts.progress,
                                      source=opts.data.kind)
        feasible, infeasible = split_budgets(budgets, costs.minimum_budget())
        echo(f"run directory {out} (rerun with --out {out} to resume); method {method.name}; objective "
             f"{s.objective.name}; tasks {', '.join(names)}; budgets {', '.join(f'{b:g}' for b in budgets)} in "
             f"{costs.unit_text()}")
        for b in infeasible:
            echo(f"budget {budget_text(b, opts.cost)} is infeasible: the cheapest networks covering every task cost "
                 f"{costs.minimum_budget():.4g}; answering the others")
        runner = s.runner(opts, store)
        if opts.cost == "latency":  # the store's latency rows are this run's too
            runner.keys.update(canonical_json(latency_settings(spec, opts.data.resolution, opts.latency_batch,
                                                                    source=opts.data.kind))
                               for spec in costs.specs)
        keys = method.store_keys(runner, settings)
        stored = sum(store.get(key) is not None for key in keys)
        cost = method.cost(names, opts.steps, settings)
        echo(f"{method.name}: {cost.what} ({cost.steps} steps{' each' if cost.trainings > 1 else ''}); "
             f"{stored} of {len(keys)} already in the store")
        est = method.estimate(runner, settings)
        t0 = time.perf_counter()
        choices = choose(est, feasible, s.objective, costs)
        bases = [baselines(names, b, costs) for b in feasible]
        solve_seconds = time.perf_counter() - t0
        verification = None
        verify_seconds = 0.0
        if opts.verify:
            t0 = time.perf_counter()
            verification = verify(runner, est, choices, bases, opts.seed, s.objective, opts.balance)
            verify_seconds = time.perf_counter() - t0
        others = store.count_other(runner.keys)
    if others:
        echo(f"note: the store holds {others} finished job(s) from other settings or code versions; not used")
    report = build_report(opts, method, s.objective, est, choices, bases, verification, s.cfg, s.data_settings,
                          costs, infeasible)
    t0 = time.perf_counter()
    trained_here = [e for e in runner.log if not e["reused"]]
    report["run"] = {
        "out": str(out),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": opts.command,
        "git_commit": git_commit(),
        "timing": {
            "data_seconds": runner.data_seconds,
            "networks": runner.log,
            "trained": len(trained_here),
            "reused": len(runner.log) - len(trained_here),
            "training_seconds": math.fsum(e["seconds"] for e in trained_here if e["phase"] == "estimate"),
            "solve_seconds": solve_seconds,
            "verify_seconds": verify_seconds,
        },
    }
    write_outputs(out, report)
    timing = report["run"]["timing"]
    timing["report_seconds"] = time.perf_counter() - t0
    timing["total_seconds"] = time.perf_counter() - t_start
    atomic_text(out / "report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    echo(format_table(report))
    echo(format_timing(report))
    echo(f"wrote {out / 'report.json'}, report.md, affinity.png, curve.png")
    return report


def check_out(out: Path, settings: Mapping[str, Any], overwrite: bool = False) -> None:
    """Refuses a run directory whose report.json is of other settings (ValueError naming what differs).

    A rerun of the same settings resumes and rewrites the same report; one of
    other settings would silently replace report.json, report.md and the
    figures, so it needs another --out, or ``overwrite`` (--overwrite). Only
    what the user chose counts (`grouping.report.settings_differences`): a new
    code version or renderer is a rerun of the same command."""
    path = out / "report.json"
    if overwrite or not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--out {out} holds a report.json this run cannot read ({e}); give another --out, or "
                         "add --overwrite to replace it") from None
    diffs = settings_differences(old, settings)
    if diffs:
        raise ValueError(f"--out {out} holds the report of other settings ({'; '.join(diffs)}): give another --out, "
                         "rerun with those settings to resume it, or add --overwrite to replace its report files "
                         "(the networks in its store are kept and reused)")


# ---------------------------------------------------------------------------
# --verify: full-schedule networks, test losses.


def verify(runner: Runner, est: Estimate, choices: Sequence[Choice], bases: Sequence[Baselines], seed: int,
           objective: Objective, balance: Sequence[str] = ()) -> dict[str, Any]:
    """Trains the chosen networks, the baselines and the full-size singles with the full schedule; test losses.
    With `balance`, also the all-task network trained with each balancing method (a baseline row each) and
    "both" per method and budget: the chosen networks with every multi-task one trained with the method
    (`grouping.balanced.both_specs`; single-task ones are unaffected by balancing), each task using the
    same network as in the choice."""
    names = est.tasks
    rng = np.random.default_rng(seed)
    samples: list[list[list[NetSpec]]] = []
    specs: list[NetSpec] = []
    for choice, base in zip(choices, bases):
        specs += choice.specs + (base.all_in_one or []) + (base.one_per_task or [])
        groupings = base.groupings()
        picked = []
        if groupings:
            idx = rng.choice(len(groupings), size=min(VERIFY_RANDOM_SAMPLES, len(groupings)), replace=False)
            picked = [groupings[i] for i in sorted(idx)]
            specs += [s for p in picked for s in p]
        samples.append(picked)
    specs += [NetSpec((t,), FULL_SIZE) for t in names]  # the references: independent full-size networks
    balanced = {m: NetSpec(tuple(names), FULL_SIZE, m) for m in balance}
    specs += list(balanced.values())
    specs += [s for choice in choices for m in balance for s in both_specs(choice, m)]
    trained = runner.train(specs, phase="verify")
    test = {s.label: {t: tr.loss(t, "test") for t in s.tasks} for s, tr in trained.items()}
    reference = objective.reference(test, names)

    def measured(networks: Sequence[NetSpec] | None, assignment: Mapping[str, str] | None = None):
        if networks is None:
            return None
        per_task = per_task_losses(networks, test, names, assignment)
        return {"test_total": objective.total(per_task, reference), "test": per_task}

    out = []
    for choice, base, picked in zip(choices, bases, samples):
        chosen = measured(choice.specs, choice.assignment)
        chosen["change_percent"] = task_changes(chosen["test"], test, names)
        entry: dict[str, Any] = {"budget": choice.budget, "chosen": chosen,
                                 "all_in_one": measured(base.all_in_one), "one_per_task": measured(base.one_per_task)}
        if picked:
            totals = [score(p, test, names, objective, reference) for p in picked]
            entry["random"] = {"test_total": math.fsum(totals) / len(totals),
                               "samples": [[list(s.tasks) for s in p] for p in picked], "sample_totals": totals}
        else:
            entry["random"] = None
        if balanced and choice.budget >= 1:  # one all-task network: fits every budget of at least 1
            entry["balanced"] = {m: measured([spec]) for m, spec in balanced.items()}
        if balanced:
            entry["both"] = {}
            for m in balance:
                networks = both_specs(choice, m)
                relabel = {s.label: b.label for s, b in zip(choice.specs, networks)}
                entry["both"][m] = measured(networks, {t: relabel[label] for t, label in choice.assignment.items()})
                entry["both"][m]["networks"] = [s.label for s in networks]
        out.append(entry)
    return {"per_budget": out, "networks": {s.label: {"test": test[s.label],
                                                      "validation": {t: tr.loss(t) for t in s.tasks},
                                                      "test_metrics": {t: {k: v for k, v in tr.test[t].items()
                                                                           if k != "loss"} for t in s.tasks},
                                                      "steps": tr.steps} for s, tr in trained.items()}}
