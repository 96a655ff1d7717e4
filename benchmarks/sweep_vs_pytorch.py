"""A whole sweep of candidate networks: our ensembles against PyTorch, one network after another.

The same candidate networks train for the same steps, batch and data, and
are evaluated on the same validation images, two ways in one process:

* ours: the networks of one width as ensembles (`mtl.ensemble`: the chunk
  plan, `train_ensemble`, `evaluate_ensemble`, the calls that
  `train_ensemble_and_evaluate` makes, each timed apart). On one device the
  plan builds the ensemble and traces its step for a memory bound, and
  training reuses both ("whole"); elsewhere it traces one member's step, and
  compiles it only where memory could limit the chunks (`plan_ensemble`;
  the JSON's `memory_plan`; "whole" plans include building the networks);
  evaluation runs in equal batches (`mtl.train.even_batch`: 50 for 500
  images), one program per ensemble (`--compile-early on`: compiled on a
  thread while the ensemble trains, an experiment that lost on a GPU:
  `compile_eval_early`); the JSON lists every program compiled on the
  calling thread with its seconds (`programs_compiled_here`);
* the anchor's: Standley et al.'s released code trains one network after
  another in PyTorch. Each network is the PyTorch twin of ours
  (benchmarks/torch_twin.py: same layers, losses, optimizer and schedule),
  trained from data in memory, then evaluated (its losses only, while our
  evaluation also computes every task's metrics: conservative for us).

Candidates: every subset network of `--tasks` at full size (15 of 4 tasks)
or, when `--tasks` is the ground truth's task set (grouping.groundtruth.TASKS,
5 tasks), the ground truth's 36: the 31 subsets and the 5 half-size singles
(grouping.runner.candidate_specs).

Both walls include everything a user pays after the data is in memory:
building the networks, compiling (ours), training and evaluation; the data
is rendered once, before either, and not counted. Our wall is split into
planning, tracing + compiling (XLA's own event durations), training and
evaluation. Prints a table and, last, `sweep_speedup_vs_pytorch=<float>`:
PyTorch's wall over ours, i.e. our throughput (network-steps per second)
over PyTorch's for the whole sweep. Writes JSON to `--out`, with the load
average before and after each side (on a loaded machine PyTorch's OpenMP
threads slow down far more than XLA's, which flatters our ratio), and each
side's system time and page faults. Both sides run with the process
settings the scripts apply (`mtl.runtime.tune_process`);
`--process-settings off` runs without them, to measure what they do.
`--torch-device cuda` (default: cuda where PyTorch sees a GPU) runs the
PyTorch side on a GPU.

    pip install -e '.[bench]'    # PyTorch (CPU build)
    python benchmarks/sweep_vs_pytorch.py --resolution 32                     # 15 networks of 4 tasks
    python benchmarks/sweep_vs_pytorch.py --resolution 64
    python benchmarks/sweep_vs_pytorch.py --tasks seg,depth,normals,keypoints,edges   # the ground truth's 36
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mtl import runtime  # noqa: E402
from mtl.train import TrainConfig  # noqa: E402
from tasks.registry import resolve_tasks  # noqa: E402

FOUR = "seg,depth,normals,edges"


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds: dict[str, float] = {}


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        _compile_seconds[event] = _compile_seconds.get(event, 0.0) + duration
        if event == _COMPILE_EVENTS[-1]:
            _compile_seconds["programs compiled"] = _compile_seconds.get("programs compiled", 0) + 1


jax.monitoring.register_event_duration_secs_listener(_on_event)  # once per process


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling (its monitoring events) since this clock was made."""

    def __init__(self):
        self.start = dict(_compile_seconds)

    @property
    def seconds(self) -> dict[str, float]:
        return {k: v - self.start.get(k, 0.0) for k, v in _compile_seconds.items()}

    def total(self) -> float:
        return sum(v for k, v in self.seconds.items() if k in _COMPILE_EVENTS)


def candidates(names: tuple[str, ...]):
    """The sweep's networks: grouping.runner.candidate_specs, with the half-size singles
    only for the ground truth's task set."""
    from grouping.groundtruth import TASKS as GT_TASKS
    from grouping.runner import candidate_specs

    return candidate_specs(names, half_size=set(names) == set(GT_TASKS))


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def compile_eval_early(run, split: Mapping[str, np.ndarray], strategy: str,
                       batch_size: int | None = None) -> tuple[Callable, threading.Thread]:
    """`--compile-early on`, an experiment the library does not make: the ensemble's evaluation
    program (`make_ensemble_eval_fn`), compiled on a thread for the shapes `evaluate_ensemble` will
    give it (the parameters', one batch of `split`'s), to overlap training; jit reuses it at the
    first call. On an H200 it made the training step's own compilation 3x slower (6.8 s -> 19.8 s:
    the two compilations autotune convolutions on the same GPU at once) and the sweep slower
    (README "On a GPU"), so `mtl.ensemble` compiles evaluation after training. Join the thread
    before evaluating (a failed compilation is only lost time: the first call compiles again)."""
    from mtl.stacked import make_ensemble_eval_fn
    from mtl.train import even_batch
    from tasks.registry import flags_for, modalities_for

    fn = make_ensemble_eval_fn(run.ens, strategy)
    union = tuple(run.ens.tasks.values())
    n = len(split["rgb"])
    size = min(batch_size or even_batch(n), n)
    if run.mesh is not None:
        raise ValueError("compile_eval_early takes a one-device ensemble: a sharded one's program "
                         "depends on how its arrays are placed")
    # Shapes without placement: one device's uncommitted arrays (as training and `batches` give
    # them) hit the cache of a program lowered so; a placement would be a different program.
    batch = {m: jax.ShapeDtypeStruct((size, *split[m].shape[1:]), split[m].dtype)
             for m in modalities_for(union) + flags_for(union, split)}
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), run.state["params"])

    def compile_() -> None:
        try:
            fn.lower(params, batch).compile()
        except Exception:  # noqa: BLE001 - the first call compiles (and raises) in the open
            pass

    thread = threading.Thread(target=compile_, name="compile-eval", daemon=True)
    thread.start()
    return fn, thread


def run_ours(specs, by_name, train, validation, cfg: TrainConfig, strategy: str, eval_batch: int | None = None,
             compile_early: bool = False) -> dict:
    """The sweep as train_ensemble_and_evaluate runs it (one ensemble per width, chunked to fit),
    each phase timed. `eval_batch`: evaluate_ensemble's batch (None: the library's `even_batch`);
    `compile_early`: the `compile_eval_early` experiment."""
    import dataclasses

    from mtl.ensemble import ensemble_devices, evaluate_ensemble, plan_ensemble, train_ensemble
    from mtl.stacked import resolve_strategy
    from mtl.train import even_batch, to_device

    strategy = resolve_strategy(strategy)
    eval_batch = eval_batch or even_batch(len(validation["rgb"]))
    clock = CompileClock()
    devs = ensemble_devices(None)
    phases = {"plan": 0.0, "train": 0.0, "evaluate": 0.0}
    by_size: dict[float, list] = {}
    for spec in specs:
        by_size.setdefault(spec.size, []).append(spec)
    finals, vals, ensembles, plans = [], [], [], []
    t_all = time.perf_counter()
    with runtime.jax_log(r"Finished XLA compilation of (\S+) in ([0-9.e+-]+) sec") as programs:
        for size, group in by_size.items():
            members = [tuple(by_name[t] for t in s.tasks) for s in group]
            c = dataclasses.replace(cfg, size=size)
            t0 = time.perf_counter()
            chunks, how, prepared = plan_ensemble(members, c, train, strategy, devs)  # "whole": built and traced
            plans.append(how)
            early = (compile_eval_early(prepared, validation, strategy, eval_batch)
                     if prepared is not None and compile_early else None)
            phases["plan"] += time.perf_counter() - t0
            for chunk in chunks:
                part = [members[j] for j in chunk]
                union = tuple({t.name: t for m in part for t in m}.values())
                t0 = time.perf_counter()
                results, ens, params = train_ensemble(part, train, c, strategy=strategy, devices=devs, progress=False,
                                                      prepared=prepared)
                prepared = None  # "whole": the one chunk
                jax.block_until_ready(params)
                phases["train"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                fn = None
                if early is not None:
                    fn, thread = early
                    thread.join()
                    early = None
                ev = evaluate_ensemble(ens, params, to_device(validation, union), strategy=strategy,
                                      batch_size=eval_batch, eval_fn=fn)
                phases["evaluate"] += time.perf_counter() - t0
                finals += [r.losses[-1] for r in results]
                vals += ev
                ensembles.append({"size": size, "members": len(part)})
        wall = time.perf_counter() - t_all
    return {"wall_seconds": wall, "phases_seconds": phases, "memory_plan": plans, "compile_seconds": clock.total(),
            "compile_events_seconds": clock.seconds,
            "programs_compiled_here": [(name, round(float(sec), 3)) for name, sec in programs],
            "compile_early": compile_early, "ensembles": ensembles, "strategy": strategy,
            "eval_batch": eval_batch,
            "mean_final_train_loss": float(np.mean([f.mean() for f in finals])),
            "mean_validation_loss": float(np.mean([np.mean([v["loss"] for v in m.values()]) for m in vals]))}


def run_torch(specs, by_name, train, validation, cfg: TrainConfig, channels_last: bool, device: str = "cpu",
              bf16: bool = False) -> dict:
    """The sweep as Standley's released code runs it: one PyTorch network after another."""
    import dataclasses

    from benchmarks import torch_twin

    t_all = time.perf_counter()
    t0 = time.perf_counter()
    tr, va = torch_twin.tensors(train, device), torch_twin.tensors(validation, device)
    data_seconds = time.perf_counter() - t0
    runs = [torch_twin.train_and_evaluate([by_name[t] for t in s.tasks], s.size, tr,
                                          dataclasses.replace(cfg, size=s.size), va, device=device,
                                          channels_last=channels_last, bf16=bf16) for s in specs]
    wall = time.perf_counter() - t_all
    return {"wall_seconds": wall, "layout": "channels_last" if channels_last else "channels_first",
            "phases_seconds": {"data": data_seconds, "train": sum(r.train_seconds for r in runs),
                               "evaluate": sum(r.eval_seconds for r in runs)},
            "mean_final_train_loss": float(np.mean([r.final_losses.mean() for r in runs])),
            "mean_validation_loss": float(np.mean([np.mean(list(r.validation_loss.values())) for r in runs]))}


def machine() -> dict:
    device = jax.devices()[0]
    info = {"platform": device.platform, "device_kind": device.device_kind, "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "jax": jax.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import torch

        info["torch"], info["torch_threads"] = torch.__version__, torch.get_num_threads()
    except ImportError:
        pass
    return info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=FOUR, help="the sweep's tasks (the ground truth's five: its 36 networks)")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--steps", type=int, default=600, help="steps per network (the ground truth's schedule: 600)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--counts", default="4000,500", help="train,validation images (the ground truth's: 4000,500)")
    p.add_argument("--torch-layout", choices=("channels_last", "channels_first"), default="channels_last")
    p.add_argument("--strategy", default="auto", help="ours: auto | unroll | vmap")
    p.add_argument("--torch-threads", type=int, default=None, help="PyTorch's threads (default: one per core)")
    p.add_argument("--torch-device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="PyTorch's device (auto: cuda where PyTorch sees a GPU)")
    p.add_argument("--eval-batch", type=int, default=None,
                   help="ours: evaluation batch (default: the library's, mtl.train.even_batch: equal batches of at most 64)")
    p.add_argument("--compile-early", choices=("off", "on"), default="off",
                   help="ours: compile the evaluation program on a thread while training (an experiment: "
                        "compile_eval_early)")
    p.add_argument("--order", choices=("ours-first", "torch-first"), default="ours-first")
    p.add_argument("--process-settings", choices=("on", "off"), default="on",
                   help="mtl.runtime.tune_process, as the scripts apply it (off: jax's asynchronous CPU dispatch "
                        "and glibc's default allocator, to measure what it does)")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/sweep_vs_pytorch_<res>.json)")
    args = p.parse_args(argv)

    try:
        import torch
    except ImportError:
        sys.exit("error: PyTorch is not installed; pip install -e '.[bench]' (torch, CPU build)")
    from tasks.scenes import render_scenes

    # As the scripts do (mtl.cli.run); PyTorch, in this process, gets it too.
    settings = runtime.tune_process() if args.process_settings == "on" else {}
    torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    tdev = ("cuda" if torch.cuda.is_available() else "cpu") if args.torch_device == "auto" else args.torch_device
    if tdev == "cuda":
        torch.backends.cudnn.benchmark = True
    tasks = resolve_tasks(args.tasks)
    by_name = {t.name: t for t in tasks}
    specs = candidates(tuple(by_name))
    n_train, n_val = (int(x) for x in args.counts.split(","))
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size)
    t0 = time.perf_counter()
    data = render_scenes(seed=0, count=n_train + n_val, resolution=args.resolution)
    train = {k: v[:n_train] for k, v in data.items()}
    validation = {k: v[n_train:] for k, v in data.items()}
    render_seconds = time.perf_counter() - t0
    print(f"{len(specs)} networks ({', '.join(sorted({f'size {s.size:g}' for s in specs}))}) of {args.tasks}, "
          f"{args.resolution}x{args.resolution}, {args.steps} steps of batch {args.batch_size}; "
          f"data rendered in {render_seconds:.1f} s (not counted)", flush=True)

    load = {"before": _load()}
    results = {}
    order = ["ours", "torch"] if args.order == "ours-first" else ["torch", "ours"]
    for who in order:
        cpu0, usage0 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        if who == "ours":
            results["ours"] = run_ours(specs, by_name, train, validation, cfg, args.strategy, args.eval_batch,
                                       compile_early=args.compile_early == "on")
        else:
            results["torch"] = run_torch(specs, by_name, train, validation, cfg, args.torch_layout == "channels_last",
                                         device=tdev)
        load[f"after_{who}"] = _load()
        r = results[who]
        r["process_cpu_seconds"] = time.process_time() - cpu0  # all threads; spin-waiting counts too
        usage = resource.getrusage(resource.RUSAGE_SELF)
        r["system_cpu_seconds"] = usage.ru_stime - usage0.ru_stime  # the kernel's share: page faults, mostly
        r["minor_page_faults"] = usage.ru_minflt - usage0.ru_minflt
        print(f"  {who:<6} {r['wall_seconds']:7.1f} s  " + "  ".join(f"{k} {v:.1f}" for k, v in r["phases_seconds"].items())
              + (f"  (of which tracing+compiling {r['compile_seconds']:.1f})" if who == "ours" else "")
              + f"; system time {r['system_cpu_seconds']:.1f} s, {r['minor_page_faults']:,} page faults", flush=True)
    ours, theirs = results["ours"], results["torch"]
    network_steps = len(specs) * args.steps
    speedup = theirs["wall_seconds"] / ours["wall_seconds"]
    out = {
        "benchmark": "sweep_vs_pytorch",
        "command": "python benchmarks/sweep_vs_pytorch.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {**machine(), "torch_device": tdev}, "process_settings": settings, "tasks": args.tasks, "networks": len(specs),
        "sizes": sorted({s.size for s in specs}), "resolution": args.resolution, "steps": args.steps,
        "batch_size": args.batch_size, "counts": [n_train, n_val], "render_seconds": render_seconds,
        "load_average": load, "ours": ours, "torch": theirs,
        "network_steps_per_second": {"ours": network_steps / ours["wall_seconds"],
                                     "torch": network_steps / theirs["wall_seconds"]},
        "sweep_speedup_vs_pytorch": speedup,
    }
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"sweep_vs_pytorch_{args.resolution}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    worst = max(x for v in load.values() for x in v[:1]) if load["before"] else 0.0
    if worst > (os.cpu_count() or 1):
        print(f"warning: other jobs loaded the machine (1-minute load average up to {worst:.1f} on {os.cpu_count()} "
              "cores); PyTorch's OpenMP threads slow down far more than XLA's under contention, so this ratio "
              "overstates ours: rerun on a quiet machine", file=sys.stderr)
    print(f"sweep_speedup_vs_pytorch={speedup:.3f}")
    return out


if __name__ == "__main__":
    main()
