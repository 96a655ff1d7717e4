#!/usr/bin/env python
"""Ground truth: train every candidate network, then score every estimator's choice.

    python scripts/ground_truth.py                      # train (resumable), write tables, evaluate
    python scripts/ground_truth.py --evaluate-only      # re-evaluate the committed record, no training
    python scripts/ground_truth.py --evaluate-only --objective loss   # Standley's summed loss instead
    python scripts/ground_truth.py --methods lookahead,surrogate     # add estimators to the finished record
    python scripts/ground_truth.py --seeds 0,1,2        # a record holding seeds 0,1 trains seed 2 only
    python scripts/ground_truth.py --balancing mgda,pcgrad   # add balanced networks: balancing, or both?

For the tasks seg, depth, normals, keypoints, edges (Standley's columns s, d,
n, k, t) and each seed, trains the 31 full-size subset networks and the 5
half-size singles with the full schedule (as ensembles), the same networks
with the ESA schedule, the tag/cs affinity run and the lookahead's probe run
(the surrogate draws its sample from the table), all through the results
store in --run-dir (kill it and rerun: finished networks are kept). Writes to
--out (default benchmarks/results/ground_truth/):

  seed<s>/results.txt, results_test.txt, results_20.txt   Standley-format tables
  mean/results*.txt                                       the same, mean over seeds
  ground_truth.json      every network's losses, the affinity matrices, settings
  evaluation.json/.md    test totals, regrets, per-task changes, pairwise transfers, seeds
                         (grouping/groundtruth.py), under --objective (default relative),
                         budgets in Standley's nominal units
  evaluation_flops.json/.md, curve_flops.png
                         the same with the networks' measured FLOPs as costs (budgets in
                         multiples of the mean full-size single-task network's FLOPs)
  curve.png              total test loss against budget, like Standley's figure

`--cost` picks the views (default nominal,flops; latency measures every
network's forward time on this machine, cached in --run-dir's store, and
writes evaluation_latency.*). FLOPs come from the model, not the training, so
`--evaluate-only --cost flops` re-evaluates a committed record.

`--methods a,b` collects only those methods' evidence for every seed
(`Method.collect`: lookahead trains its probe run, surrogate draws its sample
from the record's table and trains nothing) and merges it into the existing
--out/ground_truth.json: the runs already recorded are kept, nothing else is
trained. The record's settings must be the command's (tasks, seeds, data,
schedule; a renderer changed since the record was made is refused), and the
merge is noted under settings.merged with its code version. The evaluation
then covers every method that every seed's record holds.

`--balancing a,b` trains, once per seed and balancing method of
mtl/balancing.py (uncertainty, dwa, gradnorm, mgda, pcgrad, cagrad; equal
is the record's own networks), the all-task network and every other
multi-task network of the optimal choices at --budgets (nominal costs,
--objective), through the same store, and merges them into
--out/ground_truth.json under each seed's "balanced" and "balanced_groups"
(the same checks of the record's settings as --methods). Networks the
record already holds are not trained again. The evaluation then has two
rows per method (grouping/balanced.py): "balanced:<method>", the all-task
network trained with it, and "both:<method>", the optimal grouping at each
budget with its multi-task networks trained with it (single-task networks
are unaffected by balancing), both against the optimal grouping with equal
weights at every budget: grouping, balancing, or both.

The tables run directly through `python scripts/select_networks.py --table
.../seed0/results.txt --test-table .../seed0/results_test.txt`. Estimator costs
(in all-task training runs) and wall times are read from
benchmarks/results/estimation_cost.json when it exists (`python
benchmarks/estimation_cost.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtl import cli, options  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ground_truth"


def column_letters(tasks) -> list[str]:
    """Standley's one-letter column names (s, d, n, k, t, e, r, c, a: each task's one-letter alias),
    or the task names when two tasks would share a letter or one has none."""
    letters = [next((a for a in t.aliases if len(a) == 1), t.name) for t in tasks]
    return letters if len(set(letters)) == len(letters) else [t.name for t in tasks]


def build_parser() -> argparse.ArgumentParser:
    from grouping.groundtruth import TASKS
    from grouping.methods import QUICK_FRACTION, SURROGATE_SAMPLES
    from grouping.objective import DEFAULT_OBJECTIVE, OBJECTIVES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=options.HelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help="the tasks: Standley's task set 1, in his column order")
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels: a multiple of 8, 32 to 256")
    p.add_argument("--steps", type=int, default=600, help="steps of the full schedule")
    p.add_argument("--batch-size", type=int, default=32, help="images per training step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    p.add_argument("--counts", default="4000,500,500", help="train,validation,test scenes")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the rendered scenes")
    p.add_argument("--labels", default=None,
                   help="which training scenes keep which labels (tasks/label_plan.py; default scarce); full: every "
                        "label everywhere (the records before it)")
    p.add_argument("--task-weights", default=None,
                   help="training loss weights, e.g. seg=3,depth=3; '' for none (default: the label plan's)")
    p.add_argument("--esa-fraction", type=float, default=0.2, help="esa: fraction of the schedule")
    p.add_argument("--every", type=int, default=10, help="tag/cs/lookahead: measure affinity every N steps")
    p.add_argument("--surrogate-samples", type=int, default=SURROGATE_SAMPLES,
                   help="surrogate: random task subsets besides the singles and the all-task network")
    p.add_argument("--quick-fraction", type=float, default=QUICK_FRACTION,
                   help="quick: fraction of the schedule each of its networks is trained for")
    p.add_argument("--methods", default=None,
                   help="collect only these methods (comma-separated) and merge them into the existing "
                        "--out/ground_truth.json (default: every method, a new record)")
    p.add_argument("--balancing", default=None,
                   help="train only the all-task network and the optimal choices' multi-task networks with these "
                        "balancing methods (comma-separated, mtl/balancing.py) per seed and merge them into the "
                        "existing --out/ground_truth.json (default: none)")
    p.add_argument("--budgets", default="1:5:0.5", help="budgets of the curves: a number, a list or a range")
    p.add_argument("--objective", default=DEFAULT_OBJECTIVE, choices=OBJECTIVES,
                   help="what the totals are: relative (mean of loss / single-task loss) or loss (sum)")
    p.add_argument("--cost", default="nominal,flops",
                   help="the cost views to evaluate, comma-separated: nominal (Standley's units, evaluation.*), "
                        "flops (evaluation_flops.*), latency (evaluation_latency.*)")
    p.add_argument("--latency-batch", type=int, default=1, help="--cost latency: images per timed forward batch")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="where the tables, ground_truth.json and the evaluation go")
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "ground_truth"), help="results store and checkpoints")
    p.add_argument("--devices", type=int, default=None, help="ensembles: devices to shard over (default all local ones)")
    p.add_argument("--evaluate-only", action="store_true", help="evaluate --out/ground_truth.json; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def device_info() -> dict:
    import jax

    d = jax.devices()[0]
    return {"platform": d.platform, "kind": d.device_kind, "count": len(jax.devices()), "cpus": os.cpu_count(),
            "machine": platform.machine()}


def _command() -> str:
    return " ".join(map(shlex.quote, ["scripts/ground_truth.py", *sys.argv[1:]]))


def setting(args, names):
    """(tasks, data spec, data settings, the seed-0 TrainConfig, method settings) of the command."""
    from grouping.methods import MethodSettings
    from grouping.dataspec import DataSpec
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks

    tasks = resolve_tasks(names)
    labels = cli.scene_labels(True, args.labels)
    data = DataSpec("scenes", args.resolution, args.data_seed, cli.parse_counts(args.counts), labels=labels)
    cfg0 = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                       task_weights=cli.task_weights_for(labels, args.task_weights, tasks))
    methods = MethodSettings(esa_fraction=args.esa_fraction, every=args.every, samples=args.surrogate_samples,
                             quick_fraction=args.quick_fraction)
    return tasks, data, data.check(tasks), cfg0, methods


def record_settings(args, names) -> dict:
    """The "settings" of a record this command writes (and a merge must match: `differences`)."""
    from grouping.runner import train_settings
    from grouping.store import code_version

    _, _, data_settings, cfg0, methods = setting(args, names)
    return {"train": train_settings(cfg0), "data": data_settings, "esa_fraction": methods.esa_fraction,
            "every": methods.every, "code_version": code_version(), "device": device_info(), "command": _command()}


def differences(recorded: dict, wanted: dict) -> list[str]:
    """What the command would train differently from a record: training, data (renderer included), esa, every."""
    from tasks.scene_data import same_rendering

    out = []
    for key in ("train", "data"):
        a, b = dict(recorded.get(key, {})), wanted[key]
        old, new = a.get("renderer"), b.get("renderer")
        if key == "data" and old != new and same_rendering(old):  # a refactored renderer, the same scenes
            a["renderer"] = new
            a["dataset"] = str(a.get("dataset", "")).replace(f"_{old}/", f"_{new}/")
        out += [f"{key}.{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    out += [f"{k} {recorded.get(k)!r} -> {wanted[k]!r}" for k in ("esa_fraction", "every")
            if recorded.get(k) != wanted[k]]
    return out


def collect_seeds(args, names, seeds, methods=None, on_seed=None, balancing=(), records=None) -> dict:
    """{seed: record} of `methods` (None: every method) for each seed, through the store in --run-dir;
    with `balancing`, only the all-task network and the multi-task networks of the optimal choices of
    `records` (the seeds' recorded runs) at --budgets, each trained with each of those balancing methods."""
    import dataclasses

    from grouping.balanced import collect_balanced
    from grouping.groundtruth import both_networks, collect
    from grouping.runner import Runner
    from grouping.store import ResultsStore
    from grouping.tables import parse_budgets

    tasks, data, data_settings, cfg0, settings = setting(args, names)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    with ResultsStore(run_dir / "store.sqlite") as store:
        for seed in seeds:
            cfg = dataclasses.replace(cfg0, seed=seed)
            runner = Runner(tasks, data, cfg, run_dir, store, progress=not args.quiet,
                            data_settings=data_settings, devices=args.devices)
            t0 = time.perf_counter()
            if balancing:
                recorded = (records or {})[str(seed)]
                networks = both_networks(recorded, names, parse_budgets(args.budgets), args.objective)
                record = collect_balanced(runner, balancing, networks, recorded)
            else:
                record = collect(runner, settings, methods)
            record["wall_seconds"] = time.perf_counter() - t0
            record["data_seconds"] = runner.data_seconds
            out[str(seed)] = record
            print(f"seed {seed}: {record['wall_seconds']:.0f} s "
                  f"({', '.join(f'{m} {s:.0f} s' for m, s in record['seconds'].items())})", flush=True)
            if on_seed is not None:
                on_seed(str(seed), record)
    return out


def train(args, names, seeds, out: Path) -> dict:
    """Trains every method for `seeds` into --out/ground_truth.json, written after each seed.

    A record already there with the same tasks and settings keeps its seeds: only the seeds it lacks
    are trained (so a ground truth grows one seed at a time, and an interrupted one resumes at the
    seed level as the store resumes it at the network level). A record with other settings is
    refused, naming what differs."""
    from tasks.registry import resolve_tasks

    path = out / "ground_truth.json"
    wanted = record_settings(args, names)
    recorded = path.is_file()
    if recorded:
        gt = json.loads(path.read_text())
        if list(gt["tasks"]) != list(names):
            raise ValueError(f"{path} holds the tasks {','.join(gt['tasks'])}, not {','.join(names)}: give "
                             "another --out or the record's --tasks")
        diffs = differences(gt["settings"], wanted)
        if diffs:
            raise ValueError(f"{path} was recorded with other settings ({'; '.join(diffs)}): give another --out, "
                             "or the record's settings to add seeds to it")
    else:
        gt = {"tasks": list(names), "letters": column_letters(resolve_tasks(names)), "settings": wanted, "runs": {}}
    todo = [s for s in seeds if str(s) not in gt["runs"]]
    if gt["runs"]:
        kept = [s for s in seeds if str(s) in gt["runs"]]
        print(f"{path}: seeds {','.join(map(str, kept)) or 'none'} recorded, training "
              f"{','.join(map(str, todo)) or 'nothing'}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def save(seed: str, record: dict) -> None:
        gt["runs"][seed] = record
        path.write_text(json.dumps(gt, indent=1) + "\n")

    collect_seeds(args, names, todo, on_seed=save)
    if recorded and todo:  # seeds added to an existing record: say by which code and command
        gt["settings"].setdefault("added", []).append({
            "seeds": todo, "code_version": wanted["code_version"], "device": wanted["device"],
            "command": wanted["command"], "wall_seconds": time.perf_counter() - started})
    elif todo:
        gt["settings"]["wall_seconds"] = time.perf_counter() - started
    gt["runs"] = {str(s): gt["runs"][str(s)] for s in sorted(map(int, gt["runs"]))}
    path.write_text(json.dumps(gt, indent=1) + "\n")
    return gt


def merge(args, names, seeds, methods, out: Path, balancing=()) -> dict:
    """`methods`' evidence (or with `balancing` the balanced all-task networks and the optimal choices'
    balanced multi-task networks) for every seed, merged into --out/ground_truth.json (written after each seed)."""
    from grouping import groundtruth as G
    from grouping.methods import get_method
    from grouping.store import code_version

    path = out / "ground_truth.json"
    flag = "--balancing" if balancing else "--methods"
    if not path.is_file():
        raise ValueError(f"{flag} merges into an existing record, and {path} does not exist: run without "
                         f"{flag} first")
    gt = json.loads(path.read_text())
    for m in methods:
        get_method(m)
    if "exhaustive" in methods:
        raise ValueError("--methods adds estimators to a finished record; exhaustive's table is the record itself "
                         "(run without --methods to train a new one)")
    if list(gt["tasks"]) != list(names):
        raise ValueError(f"{path} holds the tasks {','.join(gt['tasks'])}, not {','.join(names)} (give --tasks)")
    missing = [str(s) for s in seeds if str(s) not in gt["runs"]]
    if missing:
        raise ValueError(f"{path} has no run of seed(s) {', '.join(missing)}: {flag} adds to recorded seeds only")
    diffs = differences(gt["settings"], record_settings(args, names))
    if diffs:
        raise ValueError(f"{path} was recorded with other settings ({'; '.join(diffs)}): give the record's "
                         "settings (a changed renderer needs a new ground truth)")
    started = time.perf_counter()

    def save(seed: str, evidence: dict) -> None:  # after each seed, so an interruption keeps the finished ones
        evidence = {k: v for k, v in evidence.items() if k not in ("wall_seconds", "data_seconds")}
        old = gt["runs"][seed]
        if "balanced" in evidence:  # other balancing methods and networks recorded before are kept
            evidence["balanced"] = {**old.get("balanced", {}), **evidence["balanced"]}
            groups = old.get("balanced_groups", {})
            evidence["balanced_groups"] = {**groups, **{m: {**groups.get(m, {}), **nets}
                                                        for m, nets in evidence.get("balanced_groups", {}).items()}}
            # networks taken from the record are not trained again: this run's seconds add to the record's
            evidence["seconds"] = {k: old.get("seconds", {}).get(k, 0.0) + v for k, v in evidence["seconds"].items()}
        G.merge(gt, seed, evidence)
        path.write_text(json.dumps(gt, indent=1) + "\n")

    collect_seeds(args, names, seeds, methods, on_seed=save, balancing=balancing, records=gt["runs"])
    gt["settings"].setdefault("merged", []).append({
        **({"balancing": list(balancing), "both": {"budgets": args.budgets, "objective": args.objective}}
           if balancing else {}),
        "methods": list(methods), "seeds": [int(s) for s in seeds], "code_version": code_version(),
        "device": device_info(), "command": _command(), "wall_seconds": time.perf_counter() - started})
    path.write_text(json.dumps(gt, indent=1) + "\n")
    return gt


def write_tables(gt: dict, out: Path) -> None:
    import numpy as np

    from grouping.tables import write_standley_table

    names, letters = gt["tasks"], gt["letters"]
    to_letter = dict(zip(names, letters))

    def columns(rows: dict) -> dict:  # network labels and tasks in the tables' column names
        return {_relabel(label, to_letter): {to_letter[t]: v for t, v in row.items()} for label, row in rows.items()}

    files = {"results.txt": "validation", "results_test.txt": "test", "results_20.txt": "early_validation"}
    runs = list(gt["runs"].values())
    for seed, record in gt["runs"].items():
        for fname, key in files.items():
            write_standley_table(out / f"seed{seed}" / fname, letters, columns(record[key]))
    for fname, key in files.items():
        mean = {label: {t: float(np.mean([r[key][label][t] for r in runs])) for t in row}
                for label, row in runs[0][key].items()}
        write_standley_table(out / "mean" / fname, letters, columns(mean))


def _relabel(label: str, mapping: dict) -> str:
    from grouping.selection import network_label
    from grouping.tables import parse_network_label

    tasks, half = parse_network_label(label)
    return network_label(tuple(mapping[t] for t in tasks), half)


def constant_test_losses(gt: dict) -> dict | None:
    """Each task's loss of the best constant prediction on the record's test split: computed when this
    checkout renders the record's scenes, else the record's own "constant_test_losses" (kept there by
    `main` when it computed them), else None (another renderer's scenes cannot be re-rendered)."""
    from grouping.dataspec import DataSpec
    from grouping.setting_checks import constant_losses
    from tasks.registry import resolve_tasks
    from tasks.scene_data import same_rendering

    data = gt["settings"]["data"]
    if data.get("source") != "scenes" or not same_rendering(data.get("renderer")):
        return gt.get("constant_test_losses")
    tasks = resolve_tasks(gt["tasks"])
    spec = DataSpec("scenes", data["resolution"], data["seed"], tuple(data["counts"]), labels=data.get("labels"))
    return constant_losses(tasks, spec.load(tasks, progress=False, splits=("test",))["test"])


def add_learning_rate_sum(gt: dict) -> bool:
    """Gives each seed's affinity run the summed learning rate of the record's schedule, which tag/cs read
    their losses with (`grouping.methods.tag`), where a record from before that reading lacks it; True if
    any was added. The same number `AffinityMethod.record` stores (`recorded_learning_rate_sum`)."""
    from grouping.methods.tag import recorded_learning_rate_sum

    added = False
    for record in gt["runs"].values():
        run = record.get("affinity_run")
        if run is not None and "learning_rate_sum" not in run:
            run["learning_rate_sum"] = recorded_learning_rate_sum(gt["settings"]["train"])
            added = True
    return added


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from grouping import groundtruth as G
    from grouping.setting_checks import check_setting
    from grouping.setting_checks import markdown as setting_markdown
    from grouping.tables import parse_budgets
    from tasks.registry import resolve_tasks

    names = tuple(t.name for t in resolve_tasks(args.tasks, min_tasks=2))
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be integers separated by commas, got {args.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs distinct seeds, got {args.seeds!r}")
    budgets = parse_budgets(args.budgets)
    from grouping.costs import check_cost_kind

    kinds = [check_cost_kind(k.strip()) for k in args.cost.split(",") if k.strip()]
    if not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"--cost needs distinct cost kinds, got {args.cost!r}")
    options.at_least("--latency-batch", args.latency_batch, 1)
    out = Path(args.out)
    if args.methods is not None and args.evaluate_only:
        raise ValueError("--methods collects and merges; --evaluate-only trains nothing: give one of them")
    if args.balancing is not None and (args.evaluate_only or args.methods is not None):
        raise ValueError("--balancing trains the balanced all-task networks and merges them; give it without "
                         "--methods and --evaluate-only")
    if args.balancing is not None:
        from mtl.balancing import parse_methods

        balancing = parse_methods(args.balancing)
        if not balancing:
            raise ValueError("--balancing needs at least one balancing method name")
        gt = merge(args, names, seeds, [], out, balancing=balancing)
    elif args.methods is not None:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise ValueError("--methods needs at least one method name")
        gt = merge(args, names, seeds, methods, out)
    elif args.evaluate_only:
        path = out / "ground_truth.json"
        if not path.is_file():
            raise ValueError(f"{path} does not exist: run without --evaluate-only first")
        gt = json.loads(path.read_text())
    else:
        gt = train(args, names, seeds, out)
    write_tables(gt, out)
    costs = seconds = None
    cost_file = ROOT / "benchmarks" / "results" / "estimation_cost.json"
    if cost_file.is_file():
        measured = json.loads(cost_file.read_text())
        costs, seconds = measured.get("units"), measured.get("seconds")
    constants = constant_test_losses(gt)
    changed = add_learning_rate_sum(gt)
    if constants is not None and gt.get("constant_test_losses") != constants:  # kept for later renderers
        gt["constant_test_losses"] = {t: float(v) for t, v in constants.items()}
        changed = True
    if changed:
        (out / "ground_truth.json").write_text(json.dumps(gt, indent=1) + "\n")
    views = {kind: evaluation_view(args, gt, budgets, costs, seconds, kind) for kind in kinds}  # all computed, then written
    for kind, ev in views.items():
        suffix = "" if kind == "nominal" else f"_{kind}"
        md = G.markdown(ev)
        if kind == "nominal":  # the setting's checks are defined on Standley's budgets
            ev["setting"] = check_setting(gt, ev, constants)
            md += "\n" + setting_markdown(ev["setting"])
        (out / f"evaluation{suffix}.json").write_text(json.dumps(ev, indent=1) + "\n")
        (out / f"evaluation{suffix}.md").write_text(md)
        G.plot(ev, out / f"curve{suffix}.png")
        print(f"## budgets in {G.budget_unit(ev)}\n\n{md}")
    print(f"wrote {out}")
    return 0


def evaluation_view(args, gt: dict, budgets, costs, seconds, kind: str) -> dict:
    """The evaluation with the networks priced by `kind` (nominal: Standley's units, no cost table)."""
    from grouping import groundtruth as G
    from grouping.costs import cost_table
    from grouping.store import ResultsStore

    if kind == "nominal":
        return G.evaluate(gt, budgets, costs, args.objective, seconds=seconds)
    resolution = gt["settings"]["data"]["resolution"]
    if kind == "flops":
        table = cost_table(gt["tasks"], kind, resolution=resolution)
    else:  # latency: measured on this machine, cached in the run directory's store
        with ResultsStore(Path(args.run_dir) / "store.sqlite", lock=False) as store:
            table = cost_table(gt["tasks"], kind, resolution=resolution, latency_batch=args.latency_batch,
                               store=store, progress=not args.quiet)
    return G.evaluate(gt, budgets, costs, args.objective, table, seconds=seconds)


if __name__ == "__main__":
    cli.run(main)
