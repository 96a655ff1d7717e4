"""Process and compiler settings that make training faster on a CPU.

Two measured causes of a slow training step on XLA:CPU (2-core machine,
jaxlib 0.10; `python benchmarks/train_step.py`, README "Benchmarks"):

* Convolution library. XLA:CPU hands convolutions to YNNPACK by default.
  For this network's shapes (3-128 channels, 8-64 pixels) XLA's own Eigen
  convolutions are faster in most layers, forward and backward.
  `compiler_options()` gives the per-program option that keeps YNNPACK for
  reductions only; `jit` applies it on a CPU backend (the same program, the
  same numbers up to float rounding).
* Page faults (opt-in). glibc returns the step's large temporaries to the
  kernel after every step (mmap'd blocks, arena trimming) and the next step
  faults them back in: about 17,000 page faults and 30 ms of system time per
  64x64 step. `tune_malloc()` keeps freed memory in the process (one arena,
  no mmap, no trimming). It helped the steady 64x64 step but made the
  compile-heavy 32x32 sweep 19-29% slower (not diagnosed), so it is off
  unless `MTL_TUNE_MALLOC=1`; entry points (the scripts, the benchmarks)
  call it, never an import. Each half alone did nothing for the step, so
  the one arena that may slow the sweep cannot be dropped: in one session,
  `GLIBC_TUNABLES=<T> python benchmarks/train_step.py --ensemble 0 --out
  /tmp/t.json` gave 0.72x PyTorch with T=glibc.malloc.arena_max=1, 0.72x
  with T=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647,
  0.85x with both, and 0.80x untouched.

`MTL_CPU_TUNING=0` turns both off (to compare, or if a setting misbehaves).
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any, Callable

import jax
import numpy as np

#: XLA:CPU: YNNPACK for reductions only, so convolutions use XLA's Eigen ones.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def enabled() -> bool:
    return os.environ.get("MTL_CPU_TUNING", "1") != "0"


@functools.cache
def _options_accepted() -> bool:
    """Whether this jaxlib knows the option (it is experimental; a newer or
    older XLA may not): an unknown option would fail every compile."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(1.0).compile()
        return True
    except Exception:  # noqa: BLE001 - any rejection means: compile without it
        return False


def compiler_options() -> dict[str, Any] | None:
    """Per-program XLA options for the default backend (None: XLA's defaults)."""
    if not enabled() or jax.default_backend() != "cpu" or not _options_accepted():
        return None
    return dict(CPU_COMPILER_OPTIONS)


def jit(fn: Callable, **kwargs) -> Callable:
    """`jax.jit` with `compiler_options()` (decided when called, on the backend
    in use then)."""
    return jax.jit(fn, compiler_options=compiler_options(), **kwargs)


def put(x: Any) -> jax.Array:
    """A host array on the device, compiling nothing (`jnp.asarray` of a numpy array compiles a copy
    program per shape in this jax); a device array is returned as it is."""
    return x if isinstance(x, jax.Array) else jax.device_put(np.asarray(x))


_malloc_tuned = False


def tune_malloc() -> bool:
    """With MTL_TUNE_MALLOC=1, keep freed heap memory in the process (glibc
    only); True if applied.

    Call it early in a process's entry point, before large arrays exist.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if not enabled() or os.environ.get("MTL_TUNE_MALLOC", "0") != "1":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_ARENA_MAX, 1) == 1) & (libc.mallopt(_M_MMAP_MAX, 0) == 1)
        ok &= libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    _malloc_tuned = bool(ok)
    return _malloc_tuned
