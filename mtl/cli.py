"""What the command-line front ends share: clear errors instead of tracebacks.

A script's `main` raises ValueError (and its subclasses: unknown tasks,
resolutions, layouts, tables, budgets), OSError (a file it cannot read or
write) or TrainingDiverged for anything the user can fix; `run` prints
`error: <message>` on one line and exits with status 2.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence


# TrainingDiverged is a FloatingPointError. Not RuntimeError in general: an
# XLA or HiGHS failure is a bug to be seen with its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError)


def init_distributed() -> None:
    """With MTL_DISTRIBUTED=1, joins a multi-process JAX run, so ensembles shard over
    every process's devices (mtl.ensemble).

    `jax.distributed.initialize()` finds its settings on SLURM, Open MPI and the
    other clusters JAX detects; by hand, set JAX_COORDINATOR_ADDRESS (host:port
    of process 0) and MTL_NUM_PROCESSES, MTL_PROCESS_ID. CPU processes talk
    through gloo."""
    import os

    if os.environ.get("MTL_DISTRIBUTED", "") in ("", "0"):
        return
    import jax

    kwargs = {}
    for key, env in (("num_processes", "MTL_NUM_PROCESSES"), ("process_id", "MTL_PROCESS_ID")):
        if os.environ.get(env):
            try:
                kwargs[key] = int(os.environ[env])
            except ValueError:
                raise ValueError(f"{env} must be an integer, got {os.environ[env]!r}") from None
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Calls main(argv); a user error becomes a one-line message and exit 2.
    First tunes the allocator if MTL_TUNE_MALLOC=1 (`mtl.runtime.tune_malloc`)
    and, with MTL_DISTRIBUTED=1, joins a multi-process run (`init_distributed`)."""
    from mtl import runtime

    try:
        runtime.tune_malloc()
        init_distributed()
        code = main(argv)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept (rerun the same command to resume)", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as e:
        message = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else str(e)
        print(f"error: {message}".replace("\n", " "), file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def parse_counts(text: str) -> tuple[int, int, int]:
    """'4000,500,500' -> (4000, 500, 500): train, validation, test images."""
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        counts = ()
    if len(counts) != 3 or min(counts) < 1:
        raise ValueError(f"--counts wants three positive integers train,validation,test (e.g. 4000,500,500), got {text!r}")
    return counts  # type: ignore[return-value]
