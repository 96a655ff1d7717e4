"""Do the one-run affinities say anything about losses? Checked on a ground-truth record, no training.

tag and cs choose groups from one all-task training run and read losses
off their matrices to first order (grouping/methods/tag.py). This measures
whether the matrices carry loss information at all.
For every seed, every full-size network S of fewer than all tasks and every
task j in S, from the record's validation losses:

    x = sum over the tasks i left out of S of M[i, j]     (the affinity onto j that S gives up;
                                                           M[i, j]: effect of i on j, positive = helps)
    y = ln( L_j(S) / L_j(all tasks) )                     (how much worse j does in S than in the
                                                           all-task network, measured)

If M measured help, leaving helpers out would raise j's loss: y would rise
with x. Printed per matrix: the correlation of x and y (pooled over seeds,
networks and tasks; and per seed), and for TAG the error of its own
first-order reading: TAG's ``Z[i, j] / eta`` is the relative drop of j's loss
per unit step along i's gradient, so over the schedule the log loss j gives
up is ``y_hat = x * sum_t eta_t`` (the learning rates of the record's
schedule); its median absolute error against predicting no change at all
(``y_hat = 0``). The corrected lookahead's normalised matrix (the lookahead
method's, calibrated by trained singles) is shown for comparison.

    python benchmarks/affinity_vs_loss.py [--record benchmarks/results/ground_truth/ground_truth.json]

Writes JSON to --out; the last line is ``tag_loss_correlation=<float>``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grouping.methods.tag import first_order_losses, recorded_learning_rate_sum  # noqa: E402
from grouping.selection import network_label  # noqa: E402

MATRICES = {"tag": lambda run: run.get("tag"), "cs": lambda run: run.get("cs"),
            "lookahead (normalised)": lambda run: (run.get("lookahead") or {}).get("normalised")}


def first_order_errors(run: dict, names: tuple[str, ...], matrix: np.ndarray, kappa: float) -> np.ndarray:
    """|ln L_hat_j(S) - ln L_j(S)| of tag's own reading (`grouping.methods.tag.first_order_losses`, anchored at
    the record's all-task network), for the pairs of `pairs`, in its order."""
    validation = run["validation"]
    read = first_order_losses(names, matrix, kappa, validation[network_label(names)])
    return np.asarray([abs(np.log(read[network_label(s)][t] / validation[network_label(s)][t]))
                       for k in range(1, len(names)) for s in itertools.combinations(names, k) for t in s])


def pairs(run: dict, names: tuple[str, ...], matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) for every full-size network of fewer than all tasks and every task it learns."""
    validation = run["validation"]
    everything = validation[network_label(names)]
    xs, ys = [], []
    for k in range(1, len(names)):
        for subset in itertools.combinations(names, k):
            losses = validation[network_label(subset)]
            for t in subset:
                j = names.index(t)
                xs.append(sum(matrix[names.index(i), j] for i in names if i not in subset))
                ys.append(np.log(losses[t] / everything[t]))
    return np.asarray(xs), np.asarray(ys)


def analyse(gt: dict) -> dict:
    names = tuple(gt["tasks"])
    seeds = sorted(gt["runs"], key=int)
    kappa = recorded_learning_rate_sum(gt["settings"]["train"])
    out = {"tasks": list(names), "seeds": seeds, "learning_rate_sum": kappa, "matrices": {}}
    for kind, get in MATRICES.items():
        per_seed = {}
        for s in seeds:
            m = get(gt["runs"][s])
            if m is not None:
                per_seed[s] = pairs(gt["runs"][s], names, np.asarray(m, dtype=np.float64))
        if not per_seed:
            continue
        x = np.concatenate([p[0] for p in per_seed.values()])
        y = np.concatenate([p[1] for p in per_seed.values()])
        entry = {"pairs": int(x.size), "correlation": float(np.corrcoef(x, y)[0, 1]),
                 "correlation_per_seed": {s: float(np.corrcoef(*p)[0, 1]) for s, p in per_seed.items()},
                 "median_abs_log_change": float(np.median(np.abs(y)))}
        if kind == "tag":
            entry["first_order_median_abs_error"] = float(np.median(np.concatenate(
                [first_order_errors(gt["runs"][s], names, np.asarray(get(gt["runs"][s]), dtype=np.float64), kappa)
                 for s in per_seed])))
        out["matrices"][kind] = entry
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", default=str(ROOT / "benchmarks" / "results" / "ground_truth" / "ground_truth.json"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "affinity_vs_loss.json"))
    args = p.parse_args(argv)
    record = Path(args.record)
    if not record.is_file():
        raise SystemExit(f"error: {record} does not exist: give a ground-truth record (scripts/ground_truth.py)")
    result = analyse(json.loads(record.read_text()))
    if "tag" not in result["matrices"]:
        raise SystemExit(f"error: {record} holds no TAG matrix (run scripts/ground_truth.py --methods tag)")
    result["record"] = str(record.relative_to(ROOT)) if record.is_relative_to(ROOT) else str(record)
    result["command"] = "python benchmarks/affinity_vs_loss.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"{len(result['seeds'])} seeds of {', '.join(result['tasks'])}; "
          f"x = affinity onto j left out of S, y = ln(L_j(S) / L_j(all)), validation losses")
    for kind, e in result["matrices"].items():
        seeds = ", ".join(f"{v:+.2f}" for v in e["correlation_per_seed"].values())
        print(f"{kind:<24} correlation {e['correlation']:+.3f} over {e['pairs']} pairs (per seed {seeds})")
    tag = result["matrices"]["tag"]
    print(f"TAG's first-order loss prediction (x * {result['learning_rate_sum']:.3f}, the schedule's summed rate): "
          f"median |error| {tag['first_order_median_abs_error']:.4f} in log loss, against "
          f"{tag['median_abs_log_change']:.4f} for predicting no change")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    print(f"tag_loss_correlation={tag['correlation']:.4f}")


if __name__ == "__main__":
    main()
