#!/usr/bin/env python
"""Find which tasks to learn together under an inference budget.

    python scripts/find_groups.py --tasks seg,depth,normals,edges --budget 2

Trains what the --method needs on the embedded scenes (or --data nyuv2:DIR,
cityscapes:DIR, celeba:DIR, or a Taskonomy-layout directory), chooses the best
networks for every budget (one value, a list 1,2,3 or a range 1:5:0.5; one
solve gives the whole curve; in multiples of one full-size single-task network
in the --cost, FLOPs by default), prints them
beside the baselines and writes report.json, report.md, affinity.png and
curve.png to --out. Every finished network is kept in --out/store.sqlite:
rerun the same command with the same --out after an interruption and it
resumes. Bad input: 'error: ...' and exit status 2. The logic lives in
grouping/ (find_groups.py; the estimators in methods/, choosing in choose.py,
the objective in objective.py, the report in report.py).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl import cli, options  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from grouping.costs import COST_KINDS, DEFAULT_COST
    from grouping.find_groups import DEFAULT_METHOD, DEFAULT_STEPS
    from grouping.methods import ESA_FRACTION, QUICK_FRACTION, SURROGATE_SAMPLES, method_names
    from grouping.objective import DEFAULT_OBJECTIVE, OBJECTIVES
    from grouping.runner import AFFINITY_EVERY

    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=options.HelpFormatter)
    p.add_argument("--tasks", default="seg,depth,normals,edges", help="task names or aliases, comma-separated (at least 2)")
    p.add_argument("--budget", "--budgets", dest="budget", default="2",
                   help="inference budget(s) in multiples of one full-size single-task network in the --cost (1 = "
                        "their mean over the tasks asked for): 2, a list 1,2,3 or a range 1:5:0.5; budgets below the "
                        "cheapest cover are reported infeasible, the others answered")
    p.add_argument("--cost", default=DEFAULT_COST,
                   help=f"{' | '.join(COST_KINDS)}: what a network costs: flops = XLA's forward FLOPs, encoder and "
                        "decoders; latency = measured forward time on this device; nominal = Standley's units "
                        "(a full-size network 1 whatever its decoders, a half-size single 0.5)")
    p.add_argument("--latency-batch", type=int, default=1, help="--cost latency: images per timed forward batch")
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"{' | '.join(method_names())}")
    p.add_argument("--objective", default=DEFAULT_OBJECTIVE,
                   help=f"{' | '.join(OBJECTIVES)}: relative = mean over tasks of the "
                        "loss over the task's single-task loss; loss = the sum of losses (Standley et al.)")
    p.add_argument("--data", default="scenes", help="'scenes' (embedded), nyuv2:DIR, cityscapes:DIR, celeba:DIR, "
                   "taskonomy:DIR, or a DIR in one of those layouts (README \"Your own data\")")
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels: a multiple of 8, 32 to 256")
    p.add_argument("--counts", default=None, help="train,validation,test scenes (default 4000,500,500; scenes only)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the rendered scenes")
    p.add_argument("--labels", default=None,
                   help="which training scenes keep which labels (tasks/label_plan.py; default scarce: seg and "
                        "depth labelled on a few hundred scenes each, README \"Costly labels\"); full: every label "
                        "everywhere; scenes only")
    p.add_argument("--task-weights", default=None,
                   help="training loss weights, e.g. seg=3,depth=3; '' for none (default: the label plan's, "
                        "seg=3,depth=3 under scarce, for the tasks given)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps of the full schedule")
    p.add_argument("--batch-size", type=int, default=32, help="images per training step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW)")
    p.add_argument("--seed", type=int, default=0, help="initialisation, minibatch and sampling seed")
    p.add_argument("--esa-fraction", type=float, default=ESA_FRACTION, help="esa: fraction of the schedule")
    p.add_argument("--every", type=int, default=AFFINITY_EVERY,
                   help="tag/cs/lookahead: measure the affinity every N steps")
    p.add_argument("--surrogate-samples", type=int, default=SURROGATE_SAMPLES,
                   help="surrogate: random task subsets trained besides the singles and the all-task network")
    p.add_argument("--quick-fraction", type=float, default=QUICK_FRACTION,
                   help="quick: fraction of the schedule each of its networks is trained for")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints, exactly (default: every steps/4, at least 50, "
                   "and never within 30 s of the previous save)")
    p.add_argument("--out", default=None, help="run directory (default runs/<timestamp>); rerun with the same "
                   "--out to resume")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the report files in --out even if they are of other settings (the store is kept)")
    p.add_argument("--verify", action="store_true",
                   help="also train the chosen networks and the baselines with the full schedule; report test losses")
    p.add_argument("--balance", default=None,
                   help="with --verify: also train, with each of these balancing methods (comma-separated: "
                        "uncertainty, dwa, gradnorm, mgda, pcgrad, cagrad; mtl/balancing.py), the all-task network "
                        "(balancing) and the chosen networks' multi-task ones (both): grouping, balancing, or both? "
                        "(default: none)")
    p.add_argument("--no-ensemble", action="store_true",
                   help="train networks one at a time instead of as ensembles of one width (mtl/ensemble.py)")
    p.add_argument("--devices", type=int, default=None, help="ensembles: devices to shard over (default all local ones)")
    p.add_argument("--max-members", type=int, default=None,
                   help="ensembles: most networks per compiled program (default: what fits in memory)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _balancing(text):
    from mtl.balancing import parse_methods

    return parse_methods(text)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from grouping.find_groups import Options, find_groups
    from grouping.dataspec import DataSpec
    from grouping.tables import parse_budgets

    counts = cli.parse_counts(args.counts) if args.counts is not None else None
    opts = Options(
        tasks=args.tasks,
        budgets=parse_budgets(args.budget),
        method=args.method,
        objective=args.objective,
        cost=args.cost,
        latency_batch=args.latency_batch,
        data=DataSpec(args.data, args.resolution, args.data_seed, counts,
                      labels=cli.scene_labels(args.data == "scenes", args.labels)),
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        out=args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}",
        verify=args.verify,
        esa_fraction=args.esa_fraction,
        every=args.every,
        samples=args.surrogate_samples,
        quick_fraction=args.quick_fraction,
        checkpoint_every=args.checkpoint_every,
        progress=not args.quiet,
        ensemble=not args.no_ensemble,
        devices=args.devices,
        max_members=args.max_members,
        overwrite=args.overwrite,
        balance=_balancing(args.balance),
        task_weights=args.task_weights,
        command=" ".join(map(shlex.quote, ["scripts/find_groups.py", *(sys.argv[1:] if argv is None else argv)])),
    )
    find_groups(opts)
    return 0


if __name__ == "__main__":
    cli.run(main)
