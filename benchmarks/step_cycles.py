"""Where the CPU time of one JAX training step goes, by kind of code (Linux `perf`).

    pip install -e '.[bench]' && python benchmarks/step_cycles.py [--seconds 10]

Runs benchmarks/train_step.py's JAX step (4 tasks, 64x64, batch 32) in a
child process, samples both cores with `perf record` while it trains, and
sorts every sample by the code it landed in (the process's CPU time,
from /proc, is split in the samples' proportions):

- `onednn_jit_gemm`: oneDNN's run-time generated GEMM kernels (the only
  writable+executable anonymous memory in the process; XLA:CPU's Eigen
  convolutions call oneDNN's sgemm for their inner products);
- `convolution_library`: the rest of the convolution path in jaxlib (Eigen's
  im2col packing and contraction driver, XLA's patch packing);
- `xla_compiled_kernels`: the code XLA compiled for this program (fused
  elementwise ops, transposes, the losses, the optimizer);
- `kernel`: the operating system (mostly page faults on fresh buffers);
- `libc`, `python`, `jaxlib_other`, `other`.

It then times PyTorch's twin step (channels-last, as train_step.py builds
it, with the same allocator setting) in this process and compares core-milliseconds per step: the JAX
convolution code alone (`onednn_jit_gemm` + `convolution_library`) against
all the core time PyTorch's whole step can use (its wall time x cores).
Writes benchmarks/results/step_cycles_cpu.json. Needs `perf` with
permission to attach to a process (root, or kernel.perf_event_paranoid <= 1).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONV_SYMBOLS = re.compile(r"TensorImagePatchOp|Pack2DPatches|TensorContraction|gemm_pack|gebp|dnnl|mkldnn|ConvolutionThunk|SpatialConvolution|EigenConv")
CONV_KINDS = ("onednn_jit_gemm", "convolution_library")
KINDS = CONV_KINDS + ("xla_compiled_kernels", "kernel", "libc", "python", "jaxlib_other", "other")


def parse_maps(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path or "") of each mapping in /proc/PID/maps text, sorted."""
    regions = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        lo, hi = (int(a, 16) for a in parts[0].split("-"))
        regions.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return sorted(regions)


def classify(ip: int, symbol: str, regions: list[tuple[int, int, str, str]]) -> str:
    """The kind of code (one of KINDS) an instruction address lies in."""
    if ip >= 0xFFFF800000000000:
        return "kernel"
    i = bisect.bisect_right([r[0] for r in regions], ip) - 1
    if i < 0 or not regions[i][0] <= ip < regions[i][1]:
        return "other"
    _, _, perms, path = regions[i]
    name = os.path.basename(path)
    if not path:  # anonymous executable memory: generated code
        if "w" in perms and "x" in perms:
            return "onednn_jit_gemm"
        if "x" in perms:
            return "xla_compiled_kernels"
        return "other"
    if name.startswith("libjax_common"):
        return "convolution_library" if CONV_SYMBOLS.search(symbol) else "jaxlib_other"
    if name.startswith(("libc.so", "libc-")):
        return "libc"
    if name.startswith("libpython") or name.startswith("python"):
        return "python"
    return "other"


def summarize(samples: list[tuple[int, str]], regions, cpu_seconds: float, steps: int) -> dict:
    """Fractions of samples per kind and the process's CPU time per step split by them."""
    counts = Counter(classify(ip, sym, regions) for ip, sym in samples)
    n = max(len(samples), 1)
    fraction = {k: counts[k] / n for k in KINDS}
    per_step = {k: fraction[k] * cpu_seconds / max(steps, 1) * 1e3 for k in KINDS}
    return {
        "samples": len(samples),
        "fraction": fraction,
        "core_ms_per_step": per_step,
        "convolution_core_ms_per_step": sum(per_step[k] for k in CONV_KINDS),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(counter: Path) -> None:
    """Train until killed, writing the number of finished steps to `counter`."""
    import numpy as np

    from mtl import runtime
    from train_step import jax_step_fn, synthetic_data

    runtime.tune_process()
    step = jax_step_fn(synthetic_data(256, 64), 32, 10**6)
    for _ in range(5):
        np.asarray(step())
    done = 0
    while True:  # dispatched asynchronously, as train_step.py times it: wait every 10 steps
        for _ in range(10):
            out = step()
        np.asarray(out)
        done += 10
        counter.write_text(str(done))


def read_count(counter: Path) -> int:
    try:
        return int(counter.read_text() or 0)
    except (OSError, ValueError):
        return 0


def profile_jax(seconds: float, hz: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        counter, data = Path(tmp) / "steps", Path(tmp) / "perf.data"
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(counter)])
        try:
            t0 = time.time()
            while read_count(counter) < 10:  # compiled, warm, training
                if proc.poll() is not None:
                    sys.exit("error: the training process died before it started stepping")
                if time.time() - t0 > 600:
                    sys.exit("error: the training process did not start stepping within 10 minutes")
                time.sleep(0.5)
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            before, t_start, cpu_start = read_count(counter), time.perf_counter(), cpu_seconds(proc.pid)
            rec = subprocess.run(["perf", "record", "-q", "-F", str(hz), "-p", str(proc.pid), "-o", str(data),
                                  "--", "sleep", str(seconds)], capture_output=True, text=True)
            wall, steps = time.perf_counter() - t_start, read_count(counter) - before
            cpu = cpu_seconds(proc.pid) - cpu_start
        finally:
            proc.kill()
            proc.wait()
        if rec.returncode != 0 or not data.exists():
            sys.exit(f"error: perf record failed ({rec.stderr.strip()[:300]}); it needs permission to attach "
                     "to a process: run as root or set kernel.perf_event_paranoid <= 1")
        script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,sym"],
                                capture_output=True, text=True, check=True).stdout
    samples = []
    for line in script.splitlines():
        parts = line.split(maxsplit=1)
        if parts:
            samples.append((int(parts[0], 16), parts[1] if len(parts) > 1 else ""))
    out = summarize(samples, parse_maps(maps), cpu, steps)
    out.update({"steps": steps, "seconds": wall, "cpu_seconds": cpu, "ms_per_step": wall / max(steps, 1) * 1e3,
                "busy_cores": cpu / wall})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="how long perf samples the JAX step")
    ap.add_argument("--hz", type=int, default=999, help="perf sampling frequency per core")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "step_cycles_cpu.json")
    args = ap.parse_args()
    if args.child:
        return child(args.child)
    if shutil.which("perf") is None:
        sys.exit("error: this benchmark needs Linux `perf` (e.g. the linux-perf package)")
    try:
        import torch
    except ImportError:
        sys.exit("error: PyTorch is not installed; pip install -e '.[bench]' (torch==2.13.0, CPU build)")
    from mtl import runtime
    from train_step import machine, synthetic_data, time_steps, torch_step_fn

    # As in train_step.py: the process settings (mtl.runtime.tune_process)
    # apply to PyTorch in this process too; the JAX child applies them itself.
    tuned = runtime.tune_process()
    jax_profile = profile_jax(args.seconds, args.hz)
    torch.set_num_threads(os.cpu_count() or 1)
    torch_ms = time_steps(torch_step_fn(synthetic_data(256, 64), 32, 10**6, channels_last=True), 10, 5) * 1e3
    cores = os.cpu_count() or 1
    result = {"tasks": "seg,depth,normals,edges", "resolution": 64, "batch": 32, "machine": machine(),
              "cpu_tuning": {"process": tuned, "xla_compiler_options": runtime.compiler_options()},
              "jax": jax_profile, "torch_ms_per_step": torch_ms, "torch_core_ms_per_step_at_most": torch_ms * cores}
    conv = jax_profile["convolution_core_ms_per_step"]
    print(f"JAX step: {jax_profile['ms_per_step']:.1f} ms wall, {jax_profile['busy_cores']:.2f} cores busy; "
          "core-ms per step by kind of code:")
    for k in KINDS:
        print(f"  {k:<22}{jax_profile['core_ms_per_step'][k]:8.1f}  ({100 * jax_profile['fraction'][k]:4.1f}%)")
    print(f"PyTorch step: {torch_ms:.1f} ms wall = at most {torch_ms * cores:.1f} core-ms on {cores} cores")
    print(f"JAX's convolution code alone: {conv:.1f} core-ms per step "
          f"({conv / (torch_ms * cores):.2f}x all of PyTorch's step)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    print(f"jax_conv_core_ms_over_torch_core_ms={conv / (torch_ms * cores):.3f}")


if __name__ == "__main__":
    main()
