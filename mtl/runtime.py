"""Process and compiler settings that make training faster on a CPU.

Two measured causes of a slow training step on XLA:CPU (2-core machine,
jaxlib 0.10; `python benchmarks/train_step.py`, README "Benchmarks"):

* Convolution library. XLA:CPU hands convolutions to YNNPACK by default.
  For this network's shapes (3-128 channels, 8-64 pixels) XLA's own Eigen
  convolutions are faster in most layers, forward and backward.
  `compiler_options()` gives the per-program option that keeps YNNPACK for
  reductions only; `jit` applies it on a CPU backend (the same program, the
  same numbers up to float rounding).
* Page faults. XLA:CPU allocates each program's large temporaries afresh
  on every run. By default jax runs a CPU program on a worker thread, whose
  glibc arena hands blocks of that size to the kernel and back (mmap,
  trimming), and the next run faults them in again: 25 million page
  faults and 47 s of system time in a 148 s sweep of 15 networks (32x32,
  600 steps). `tune_process()` runs CPU programs on the calling thread
  (jax's `jax_cpu_enable_async_dispatch` off) and keeps freed memory in the
  main arena (glibc `mallopt`: no mmap, no trimming): 0.25 million faults,
  1 s of system time, and the sweep took 128 s (`python
  benchmarks/sweep_vs_pytorch.py [--process-settings off]`). In one-off
  runs (150 steps, not kept) neither half helped alone: with async dispatch the temporaries come from the
  worker threads' arenas, which the mallopt settings do not keep; limiting
  glibc to one arena (the earlier opt-in setting) kept them too, but
  serialised XLA's multi-threaded compilation (13 s -> 20 s of compiling
  in that sweep). Entry points (the scripts through `mtl.cli.run`, the
  benchmarks) call it before jax creates its CPU client, never an import.

`MTL_CPU_TUNING=0` turns all of them off (to compare, or if a setting misbehaves).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
from typing import Any, Callable

import jax
import numpy as np

#: XLA:CPU: YNNPACK for reductions only, so convolutions use XLA's Eigen ones.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


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


@contextlib.contextmanager
def jax_log(pattern: str):
    """A list that fills, inside the block, with what `pattern` matches in every message jax logs
    on this thread with its compile logging on (`jax.log_compiles`, a per-thread setting; the
    messages stay off the console): the one group, or the tuple of groups. For example, the
    programs XLA compiles: ``r"Finished XLA compilation of (\\S+)"``."""
    found: list = []
    regex = re.compile(pattern)

    class Record(logging.Handler):
        def emit(self, record):
            m = regex.search(record.getMessage())
            if m:
                found.append(m.group(1) if regex.groups == 1 else m.groups())

    handler, logger = Record(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield found
    finally:
        logger.removeHandler(handler)


_process_tuned: dict[str, bool] | None = None


def tune_process() -> dict[str, bool]:
    """The process settings of a fast CPU run (module docstring), unless
    MTL_CPU_TUNING=0; returns what was applied: `sync_cpu_dispatch` (False
    where jax's backends already existed, as the setting is read when the CPU
    client is created) and `keep_freed_memory` (glibc only).

    Call it first in a process's entry point, before jax computes anything
    and before large arrays exist. Both settings are process-wide and
    change no number; on a GPU the dispatch setting touches only jax's
    host-side CPU client.
    """
    global _process_tuned
    if _process_tuned is not None:
        return dict(_process_tuned)
    if not enabled():
        return {"sync_cpu_dispatch": False, "keep_freed_memory": False}
    try:  # the dispatch setting is read when jax creates its CPU client
        from jax._src import xla_bridge

        sync = not xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # a jax that does not say: assume it is too late
        sync = False
    if sync:
        try:
            jax.config.update("jax_cpu_enable_async_dispatch", False)
        except (AttributeError, KeyError, ValueError):  # a jax without the option: leave dispatch as it is
            sync = False
    kept = False
    try:
        libc = ctypes.CDLL("libc.so.6")
        kept = (libc.mallopt(_M_MMAP_MAX, 0) == 1) & (libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        pass
    _process_tuned = {"sync_cpu_dispatch": sync, "keep_freed_memory": bool(kept)}
    return dict(_process_tuned)
