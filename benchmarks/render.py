"""Throughput of the procedural scene renderer (the tasks/scenes/ package).

    python benchmarks/render.py                      # 4000 images at 64x64, also 32 and 128
    python benchmarks/render.py --count 2000 --resolutions 64 --repeats 5

Renders `count` images (fewer at 128x128 and above, see --big-count) of one
dataset with every label, several times per resolution (the first resolution
also on one thread, for reference), and prints images per second: the first (cold) render, which also pays for the process's first touch
of the output memory, and the median of the following (warm) ones. The CPU
time of the process is reported beside the wall time: on a shared machine a
wall time well above CPU / workers means other processes held the cores.
Results and machine information go to benchmarks/results/render.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks import scenes  # noqa: E402


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def bench(count: int, resolution: int, repeats: int, workers: int | None, seed: int) -> dict:
    runs = []
    for i in range(repeats):
        load = load_average()
        w0, c0 = time.perf_counter(), time.process_time()
        out = scenes.render_scenes(seed, count, resolution, workers=workers)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        runs.append({"wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "images_per_s": round(count / wall, 1),
                     "load_average_before": load})
        del out
    warm = [r["images_per_s"] for r in runs[1:]] or [runs[0]["images_per_s"]]
    res = {
        "resolution": resolution,
        "count": count,
        "workers": workers if workers is not None else scenes._default_workers(count * resolution**2),
        "cold_images_per_s": runs[0]["images_per_s"],
        "warm_images_per_s_median": round(statistics.median(warm), 1),
        "warm_images_per_s_best": round(max(warm), 1),
        "cpu_images_per_s": round(count / statistics.median(r["cpu_s"] for r in runs[1:] or runs), 1),
        "runs": runs,
    }
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=4000, help="images per render below 128x128 (default 4000)")
    ap.add_argument("--big-count", type=int, default=1000, help="images per render at 128x128 and above (default 1000)")
    ap.add_argument("--resolutions", default="64,32,128", help="comma-separated (default 64,32,128)")
    ap.add_argument("--repeats", type=int, default=4, help="renders per resolution; the first is the cold one (default 4)")
    ap.add_argument("--workers", type=int, default=None, help="render threads (default: the renderer's choice)")
    ap.add_argument("--no-single", action="store_true", help="skip the one-thread reference run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "render.json"))
    args = ap.parse_args(argv)

    info = {"machine": machine(), "command": "python benchmarks/render.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "results": []}
    print(f"{info['machine']['cpu_model']}, {info['machine']['usable_cpus']} usable CPUs, numpy {np.__version__}")
    runs = [(int(r), args.workers) for r in args.resolutions.split(",")]
    if args.workers is None and not args.no_single:
        runs.insert(1, (runs[0][0], 1))  # the first resolution on one thread too, for reference
    for R, workers in runs:
        count = args.count if R < 128 else args.big_count
        r = bench(count, R, args.repeats, workers, args.seed)
        info["results"].append(r)
        print(
            f"{R:4d}x{R:<4d} {count:5d} images, {r['workers']} worker(s): "
            f"warm {r['warm_images_per_s_median']:8.1f} img/s (best {r['warm_images_per_s_best']:.1f}), "
            f"cold {r['cold_images_per_s']:8.1f} img/s, per CPU-second {r['cpu_images_per_s']:.1f}; "
            f"load average {r['runs'][0]['load_average_before']}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
