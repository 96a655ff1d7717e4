#!/usr/bin/env python
"""How much does grouping matter at a setting? A one-seed probe, before a ground truth.

    python benchmarks/setting_probe.py --tasks s,d,n,k,t --resolution 32 --steps 600 --size 1 \
        --out benchmarks/results/setting_probe/base.json

Trains, at one setting and one seed, the single-task networks, every pair and
the all-task network (ensembles, scenes rendered in memory), then prints and
writes, under the relative objective (each task's test loss divided by its
single-task network's):

- each task's relative loss in every pair and in the all-task network,
- the headroom this subset of candidates shows: (mean relative loss of the
  all-task network - mean of each task's best relative loss) / the former.
  The full ground truth (all subsets) can only raise it,
- each task's loss against the best constant prediction (does it learn?).

Used to choose the default setting of the ground truth (issue "Grouping that
pays off on the default data"); each probe's JSON records its settings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train(args) -> dict:
    """Renders the data, trains the networks, returns the record (test losses, constants, settings)."""
    from grouping.setting_checks import constant_losses
    from mtl.ensemble import train_ensemble_and_evaluate
    from mtl.train import TrainConfig
    from tasks.registry import resolve_tasks
    from tasks.scenes import render_scenes

    import mtl.model

    if args.depth_annotated is not None and not args.annotated_apart:
        raise SystemExit("--depth-annotated needs --annotated-apart")
    if args.normals_everywhere and not (args.annotated < 1 or args.annotated_apart):
        raise SystemExit("--normals-everywhere needs --annotated below 1 (or --annotated-apart)")
    if args.annotated_repeat < 1 or (args.annotated_repeat > 1 and not (args.annotated < 1 or args.annotated_apart)):
        raise SystemExit(f"--annotated-repeat must be at least 1, and above 1 only with --annotated below 1; got "
                         f"{args.annotated_repeat} with --annotated {args.annotated}")
    if args.encoder:
        mtl.model.ENCODER_CHANNELS = tuple(int(c) for c in args.encoder.split(","))
    if args.decoder:
        mtl.model.DECODER_CHANNELS = tuple(int(c) for c in args.decoder.split(","))
    tasks = resolve_tasks(args.tasks)
    counts = [int(c) for c in args.counts.split(",")]
    if args.seg_by_height:
        tasks = _seg_by_height(tasks, args.seg_by_height)
    if args.seg_noise:
        _seg_noise(args.seg_noise)
    t0 = time.perf_counter()
    data = render_scenes(0, sum(counts), args.resolution)
    for m in filter(None, args.blur.split(",")):
        from tasks.scenes import _blur5

        x = _blur5(data[m].astype(np.float32))
        x /= np.maximum(x.reshape(len(x), -1).max(1), 1e-30)[:, None, None]
        data[m] = np.rint(x * 65535).astype(np.uint16)
    for spec in filter(None, args.holes.split(",")):
        _punch_holes(data, *spec.split("="))
    bounds = np.cumsum([0] + counts)
    splits = {s: {k: v[bounds[i]:bounds[i + 1]] for k, v in data.items()}
              for i, s in enumerate(("train", "validation", "test"))}
    if args.seg_noise:  # the noise is in the training labels only: validation and test keep the true classes
        for split in ("validation", "test"):
            splits[split]["segment_semantic"] = splits[split].pop("segment_semantic_true")
        splits["train"].pop("segment_semantic_true")
    if args.annotated < 1 or args.annotated_apart:
        annotated = _unannotate(splits["train"], args.annotated, args.annotated_apart,
                                depth_flags=args.normals_everywhere, depth_fraction=args.depth_annotated)
        if args.annotated_repeat > 1:  # the annotated images, sampled that many times as often
            splits["train"] = {k: np.concatenate([v] + [v[annotated]] * (args.annotated_repeat - 1))
                               for k, v in splits["train"].items()}
    render_s = time.perf_counter() - t0
    if args.all_subsets:
        members = [m for k in range(1, len(tasks) + 1) for m in itertools.combinations(tasks, k)]
    else:
        members = [(t,) for t in tasks] + ([] if args.no_pairs else list(itertools.combinations(tasks, 2)))
        members.append(tuple(tasks))
    scale = _loss_scales(args.weights, tasks, splits["train"])
    unknown = set(scale) - {t.name for t in tasks}
    if unknown:
        raise SystemExit(f"--weights names tasks not in --tasks: {sorted(unknown)}")
    cfg = TrainConfig(steps=args.steps, learning_rate=args.lr, size=args.size, seed=args.seed,
                      checkpoint_every=10**9,  # training loss weights: each loss divided by its --weights divisor
                      task_weights=tuple((name, 1.0 / c) for name, c in scale.items()))
    t0 = time.perf_counter()
    reports = train_ensemble_and_evaluate(members, splits, cfg, progress=True)
    train_s = time.perf_counter() - t0
    test = {"+".join(t.name for t in m): {t: r["test"][t]["loss"] for t in r["test"]}
            for m, r in zip(members, reports)}
    return {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "analyse", "what")},
            "tasks": [t.name for t in tasks], "test": test,
            "constant": constant_losses(tasks, splits["test"]),
            "render_seconds": render_s, "train_seconds": train_s}


#: What an unlabelled pixel holds, per label modality `--holes` and `--annotated` may unlabel
#: (seg: void; depth: tasks.registry.DEPTH_INVALID).
_UNLABELLED = {"depth_zbuffer": 65535, "segment_semantic": 0}


def _punch_holes(data: dict, modality: str, fraction: str) -> None:
    """Unlabels `fraction` of every image's pixels of `modality`, in smooth blobs (a 4x4 grid of
    uniform draws, upsampled and blurred, below its per-image quantile; independent per modality):
    seg gets void (0, ignored by its loss), depth DEPTH_INVALID (which also masks every task that uses
    the validity mask)."""
    from tasks.scenes import _blur5

    if modality not in _UNLABELLED:
        raise SystemExit(f"--holes: modality must be one of {sorted(_UNLABELLED)}, got {modality!r}")
    try:
        frac = float(fraction)
    except ValueError:
        frac = -1.0
    if not 0 < frac < 1:
        raise SystemExit(f"--holes: the fraction for {modality} must be a number in (0, 1), got {fraction!r}")
    labels = data[modality]
    n, r = labels.shape[:2]
    rng = np.random.default_rng([7, r, n, sorted(_UNLABELLED).index(modality)])  # each modality its own blobs
    field = np.kron(rng.random((n, 4, 4)), np.ones((r // 4, r // 4)))
    for _ in range(max(1, r // 16)):
        field = _blur5(field.astype(np.float32))
    holes = field < np.quantile(field.reshape(n, -1), frac, axis=1)[:, None, None]
    labels[holes] = _UNLABELLED[modality]


def _patch_object_classes(classes, keep_true: bool = False) -> None:
    """Patches the renderer (for this process) so that each object's seg class is
    ``classes(labels, objs, n)``: (n, len(objs)) class ids, column k for the batch's object pass k
    (`tasks.scenes.geometry._Obj`); floor, walls and ceiling keep theirs. With `keep_true`, the
    true labels are kept as "segment_semantic_true"."""
    import tasks.scenes.render as render
    from tasks.scenes.labels import encode_labels
    from tasks.scenes.params import _ROOM_CLASS, N_ROOM_SURFACES

    def encode(r, s, objs, t, sid, flat, rgb, gray, R):
        out = encode_labels(r, s, objs, t, sid, flat, rgb, gray, R)
        n = len(t)
        cls = np.empty((n, N_ROOM_SURFACES + len(objs)), np.uint8)
        cls[:, :N_ROOM_SURFACES] = _ROOM_CLASS
        cls[:, N_ROOM_SURFACES:] = classes(out, objs, n)
        if keep_true:
            out["segment_semantic_true"] = out["segment_semantic"]
        out["segment_semantic"] = np.take(cls.reshape(-1), flat, mode="wrap").reshape(n, R, R)
        return out

    render.encode_labels = encode
    if keep_true:
        render.MODALITIES = {**render.MODALITIES, "segment_semantic_true": render.MODALITIES["segment_semantic"]}


def _seg_by_height(tasks, metres: float):
    """Seg with each object kind split by its metric height: objects whose top stands above `metres`
    get a class of their own ("tall box", ..., ids 8-11), so telling them apart from a 2D image takes
    their distance, which depth is about. Patches the renderer's label encoding for this process and
    returns `tasks` with seg widened to the new classes."""
    import dataclasses

    from tasks.registry import SEG_CLASSES
    from tasks.scenes.params import _KIND_CLASS

    if not 0 < metres < 3:
        raise SystemExit(f"--seg-by-height must be a height in metres in (0, 3), got {metres}")
    n_kinds = len(_KIND_CLASS)

    def classes(labels, objs, n):
        out = np.zeros((n, len(objs)), np.uint8)
        for k, o in enumerate(objs):
            out[o.rows, k] = (np.asarray(o.top).reshape(-1) > metres) * n_kinds
            out[:, k] += _KIND_CLASS[o.kind]
        return out

    _patch_object_classes(classes)
    return [dataclasses.replace(t, channels=len(SEG_CLASSES) + n_kinds) if t.name == "seg" else t for t in tasks]


def _seg_noise(share: float) -> None:
    """Seg labels as a labelling model's would be: each object gets a wrong kind (drawn uniformly from
    the other three) with probability `share`, the same object in all its pixels; the true labels are
    kept as "segment_semantic_true" (train() evaluates on them). The draw is seeded by the image's
    first 64 bytes (its top-left pixels), so it does not depend on how the renderer batches. Patches the renderer for this process."""
    from tasks.scenes.params import _KIND_CLASS

    if not 0 < share < 1:
        raise SystemExit(f"--seg-noise must be a probability in (0, 1), got {share}")
    n_kinds = len(_KIND_CLASS)

    def classes(labels, objs, n):
        draws = np.stack([np.random.default_rng(np.frombuffer(labels["rgb"][i].tobytes()[:64], np.uint32)).random(
            (len(objs), 2)) for i in range(n)])  # (n, objects, 2)
        out = np.empty((n, len(objs)), np.uint8)
        for k, o in enumerate(objs):
            wrong = draws[:, k, 0] < share
            kind = np.where(wrong, (o.kind + 1 + (draws[:, k, 1] * (n_kinds - 1)).astype(int)) % n_kinds, o.kind)
            out[:, k] = _KIND_CLASS[kind]
        return out

    _patch_object_classes(classes, keep_true=True)


def _unannotate(train: dict, fraction: float, apart: bool = False, depth_flags: bool = False,
                depth_fraction: float | None = None) -> np.ndarray:
    """Keeps seg and depth labels on a random `fraction` of the training images (the annotated ones;
    depth's absence also unlabels normals, through the validity mask) and removes them from the rest,
    as when annotation is costly; labels computed from the image itself (edges, keypoints) stay on
    every image. With `apart`, seg and depth are annotated on two disjoint shares (as when the two
    labels come from different sources). `depth_flags`: depth loses its labels through per-image
    flags that only the depth task reads (`tasks.label_plan`), so the validity mask, and normals, stay
    whole. `depth_fraction` (with `apart`): depth's own share, if
    not `fraction`. Validation and test stay fully labelled. Returns the indices of
    the images that keep a seg or depth label."""
    if not 0 < fraction <= (0.5 if apart else 1):
        raise SystemExit(f"--annotated must be in (0, {0.5 if apart else 1}]"
                         f"{' with --annotated-apart' if apart else ''}, got {fraction}")
    from tasks.label_plan import labelled_key

    depth_fraction = fraction if depth_fraction is None else depth_fraction
    if depth_fraction != fraction and not (apart and 0 < depth_fraction <= 1 - fraction):
        raise SystemExit(f"--depth-annotated needs --annotated-apart and must be in (0, {1 - fraction:g}] beside "
                         f"--annotated {fraction:g}, got {depth_fraction}")
    n = len(train["rgb"])
    k, kd = max(1, round(fraction * n)), max(1, round(depth_fraction * n))
    order = np.random.default_rng([11, n]).permutation(n)
    depth_share = order[k:k + kd] if apart else order[:k]
    for m, share in (("segment_semantic", order[:k]), ("depth_zbuffer", depth_share)):
        keep = np.zeros(n, bool)
        keep[share] = True
        if m == "depth_zbuffer" and depth_flags:
            train[labelled_key(m)] = keep
        else:
            train[m][~keep] = _UNLABELLED[m]
    return np.sort(order[:k + kd] if apart else order[:k])


def _machine() -> str:
    """CPU count and the 1-minute load average at the end (a busy machine makes the times incomparable)."""
    import os
    import platform

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the end"


def _loss_scales(spec: str, tasks, train_split) -> dict[str, float]:
    """{task: the divisor of its training loss} from --weights: '' none, 'constant' (its best
    constant prediction's loss on the training split), or 'name=divisor,...'."""
    if not spec:
        return {}
    if spec == "constant":
        from grouping.setting_checks import constant_losses

        return constant_losses(tasks, train_split)
    pairs = [kv.split("=") for kv in spec.split(",")]
    try:
        scales = {k.strip(): float(v) for k, v in pairs}
    except ValueError:
        raise SystemExit(f"--weights: expected 'constant' or 'task=divisor,...' (e.g. seg=0.5,depth=0.2), got {spec!r}")
    if any(v <= 0 for v in scales.values()):
        raise SystemExit(f"--weights: every divisor must be positive, got {spec!r}")
    return scales


def analyse(record: dict) -> dict:
    """Relative losses, headroom and the best two networks of a probe record; prints them."""
    from tasks.registry import resolve_tasks

    names = record.get("tasks") or [t.name for t in resolve_tasks(record["settings"]["tasks"])]
    test, const = record["test"], record["constant"]
    single = {n: test[n][n] for n in names}
    rel = {k: {t: v / single[t] for t, v in row.items()} for k, row in test.items()}
    all_key = "+".join(names)
    rel_all = float(np.mean([rel[all_key][t] for t in names]))
    best = {t: min(r[t] for r in rel.values() if t in r) for t in names}
    headroom = (rel_all - float(np.mean(list(best.values())))) / rel_all
    # Budget 2 without half-size networks: the best cover by two of these networks.
    best2 = min((float(np.mean([min(rel[k][t] for k in pick if t in rel[k]) for t in names])), pick)
                for pick in itertools.combinations(rel, 2) if set(names) <= {t for k in pick for t in rel[k]})
    gain2 = (rel_all - best2[0]) / rel_all
    print(f"setting: {record['settings']}  train {record['train_seconds']:.0f}s")
    print("task      single   const   all-task(rel)  pairs (rel change %)")
    for t in names:
        pairs = " ".join(f"{u}:{100 * (rel['+'.join(sorted((t, u), key=names.index))][t] - 1):+.1f}"
                         for u in names if u != t and "+".join(sorted((t, u), key=names.index)) in rel)
        print(f"{t:9s} {single[t]:.4f}  {const[t]:.4f}  {rel[all_key][t]:.3f}  {pairs}")
    print(f"headroom ({len(rel)} networks) {100 * headroom:.1f}%  all-task mean rel {rel_all:.3f}; "
          f"best 2 of these networks {' and '.join(best2[1])}: {100 * gain2:.1f}% below the all-task network")
    return {"relative": rel, "headroom": headroom, "best_two": list(best2[1]), "gain_two": gain2}


def analyse_seeds(records: list[dict]) -> dict:
    """Probes of one setting at several training seeds: each seed's headroom, and the pairwise
    transfer table (mean ± std over seeds) with the pairs that help or hurt each other beyond
    `grouping.setting_checks.TARGETS["spread_factor"]` times the spread, as the ground truth's checks
    judge them (`grouping.setting_checks._pairs`). Prints them."""
    from grouping.groundtruth import _stats, pairwise_transfer
    from grouping.setting_checks import TARGETS, _pairs

    # An option added after a probe ran is absent from its record: it ran with that option's default.
    defaults = {k: v for k, v in vars(parser().parse_args([])).items() if k not in ("out", "analyse", "what")}
    settings = [{k: v for k, v in {**defaults, **r["settings"]}.items() if k != "seed"} for r in records]
    if any(s != settings[0] for s in settings[1:]):
        raise SystemExit("--analyse with several files: they must be probes of one setting at different seeds; "
                         f"these differ: {settings}")
    names = records[0]["tasks"]
    per_seed = [analyse(r) for r in records]
    transfer = [pairwise_transfer(r["test"], names) for r in records]
    change = {t: {u: _stats([tr[t][u] for tr in transfer]) for u in names if u != t} for t in names}
    factor = TARGETS["spread_factor"]
    helps, hurts = _pairs(change, names, -1, factor), _pairs(change, names, +1, factor)
    heads = [100 * a["headroom"] for a in per_seed]
    print(f"seeds {[r['settings']['seed'] for r in records]}: headroom (16 networks) "
          f"{np.mean(heads):.1f}% (seeds {min(heads):.1f} to {max(heads):.1f}%)")
    print("pairwise transfer, row task's change (%) next to the column task, mean ± std over seeds:")
    print("task \\ partner " + " ".join(f"{u:>13s}" for u in names))
    for t in names:
        print(f"{t:15s} " + " ".join(f"{'':>13s}" if u == t else
                                      f"{change[t][u]['mean']:+6.1f} ± {change[t][u]['std']:4.1f}" for u in names))
    print(f"helping each other beyond {factor:g}x the spread: {[h['pair'] for h in helps] or 'none'}; "
          f"hurting: {[h['pair'] for h in hurts] or 'none'}")
    return {"headroom_percent": heads, "pairwise_transfer_percent": change, "helps": helps, "hurts": hurts}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="s,d,n,k,t")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--size", type=float, default=1.0, help="encoder size of the 'full' networks")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--counts", default="4000,500,500")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pairs", action="store_true", help="singles and the all-task network only")
    p.add_argument("--encoder", default=None, help="encoder channels at size 1, e.g. 32,64,128 (mtl.model)")
    p.add_argument("--decoder", default=None, help="decoder channels, e.g. 32,16 (mtl.model)")
    p.add_argument("--blur", default="", help="label modalities to spread by a 5x5 binomial blur, e.g. edge_texture")
    p.add_argument("--holes", default="", help="unlabel a fraction of every image's pixels in blobs, e.g. "
                   "segment_semantic=0.5 (seg: void; depth_zbuffer: invalid, which masks normals too)")
    p.add_argument("--annotated", type=float, default=1.0, help="share of the training images that keep their "
                   "seg and depth labels (the rest lose them; edges and keypoints stay everywhere)")
    p.add_argument("--annotated-repeat", type=int, default=1, help="with --annotated: each annotated training "
                   "image appears this many times in the training split, so batches sample it that much more "
                   "often (as when labelled images are oversampled)")
    p.add_argument("--normals-everywhere", action="store_true",
                   help="with --annotated: normals keep their labels on every training image (as from a sensor of "
                        "their own) while depth loses them, through per-image flags only the depth task reads")
    p.add_argument("--depth-annotated", type=float, default=None, metavar="FRACTION",
                   help="with --annotated-apart: depth's share of the training images, if not --annotated's")
    p.add_argument("--annotated-apart", action="store_true", help="with --annotated: seg and depth on two "
                   "disjoint shares of the training images")
    p.add_argument("--seg-by-height", type=float, default=0.0, metavar="METRES",
                   help="split each object class of seg by the object's height (taller than METRES: a class of "
                        "its own), so seg needs the object's distance")
    p.add_argument("--seg-noise", type=float, default=0.0, metavar="P",
                   help="training seg labels give each object a wrong kind with probability P (validation and "
                        "test keep the true classes)")
    p.add_argument("--weights", default="", help="divide each task's training loss: 'constant' (by its best "
                   "constant prediction's loss on the training split) or 'seg=0.5,depth=0.2,...'")
    p.add_argument("--all-subsets", action="store_true", help="every subset network, not only pairs")
    p.add_argument("--what", default="", help="a line saying what this probe tries (kept in the JSON)")
    p.add_argument("--out", help="where the JSON goes")
    p.add_argument("--analyse", metavar="JSON", nargs="+",
                   help="print the analysis of earlier probes' JSON (several: one setting at several seeds, "
                        "with the pairwise transfer's seed spread); train nothing")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)

    if args.analyse:
        records = [json.loads(Path(f).read_text()) for f in args.analyse]
        if len(records) == 1:
            analyse(records[0])
        else:
            analyse_seeds(records)
        return 0
    if not args.out:
        p.error("--out is required (or --analyse JSON)")
    record = train(args)
    record.update(analyse(record))
    record.update(what=args.what, reproduce=shlex.join(["python", "benchmarks/setting_probe.py", *(argv or sys.argv[1:])]),
                  device=_machine())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    from mtl import runtime

    runtime.tune_process()  # as the scripts do (mtl.cli.run)
    raise SystemExit(main())
