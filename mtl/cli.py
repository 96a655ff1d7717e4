"""What the command-line front ends share: clear errors instead of tracebacks.

A script's `main` raises ValueError (and its subclasses: unknown tasks,
resolutions, layouts, tables, budgets), OSError (a file it cannot read or
write) or TrainingDiverged for anything the user can fix; `run` prints
`error: <message>` on one line and exits with status 2.

A full disk is an OSError too: `DiskFullError` (raised where the project
writes checkpoints, the results store and the dataset cache) names the
directory, its free space and, where known, how much the write needed; any
other "No space left on device" gets the same kind of line from `run`.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence


# TrainingDiverged is a FloatingPointError. Not RuntimeError in general: an
# XLA or HiGHS failure is a bug to be seen with its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, FloatingPointError)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "os_error_code='28'", "Disk quota exceeded", "database or disk is full")


def is_disk_full(e: BaseException | None) -> bool:
    """Whether `e` (or an exception it was raised from) is a full disk or quota.

    Libraries say it differently: an OSError with ENOSPC; tensorstore (under
    orbax) a ValueError 'RESOURCE_EXHAUSTED: ... No space left on device
    [os_error_code='28']'; array_record a RuntimeError 'write() failed: No space
    left on device'; SQLite 'database or disk is full'."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if any(t in str(e) for t in _FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing ancestor), or None."""
    p = Path(path).absolute()
    for q in (p, *p.parents):
        if q.exists():
            try:
                return shutil.disk_usage(q).free
            except OSError:
                return None
    return None


def size_text(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


class DiskFullError(OSError):
    """No space left on the device that a directory is on (errno ENOSPC).

    The message is one line: which directory, what was being written, the free
    space, how much the write needs where that is known, and what to do."""

    def __init__(self, directory: str | os.PathLike, what: str, needed: int | None = None, *, at_most: bool = False,
                 advice: str = "free some space (or use another --out) and rerun the same command: finished "
                               "work is kept and the run resumes"):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.directory, self.what, self.needed = Path(directory), what, needed
        self.free = free_bytes(self.directory)
        need = f" ({'at most ' if at_most else ''}about {size_text(needed)})" if needed else ""
        free = f"; {size_text(self.free)} free there" if self.free is not None else ""
        self.message = f"no space left on device in {self.directory}: writing {what}{need} failed{free}; {advice}"

    def __str__(self) -> str:
        return self.message


def user_message(e: BaseException) -> str:
    """The one line `run` prints for a user error."""
    if isinstance(e, OSError) and not isinstance(e, DiskFullError) and e.errno in _FULL_ERRNOS:
        target = Path(e.filename) if e.filename else Path.cwd()
        return str(DiskFullError(target.parent if e.filename else target, str(target) if e.filename else "a file"))
    if isinstance(e, OSError) and e.filename and not isinstance(e, DiskFullError):
        return f"{e.strerror}: {e.filename}"
    return str(e)


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
    First applies the CPU process settings (`mtl.runtime.tune_process`)
    and, with MTL_DISTRIBUTED=1, joins a multi-process run (`init_distributed`)."""
    from mtl import runtime

    try:
        runtime.tune_process()
        init_distributed()
        code = main(argv)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept (rerun the same command to resume)", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as e:
        print(f"error: {user_message(e)}".replace("\n", " "), file=sys.stderr)
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


def parse_task_weights(text: str | None, tasks) -> tuple[tuple[str, float], ...]:
    """'seg=3,depth=3' -> (("seg", 3.0), ("depth", 3.0)): training loss weights of `tasks` (names or
    aliases, resolved to the tasks' names). '' or None: none."""
    if not text:
        return ()
    by_alias = {a.lower(): t.name for t in tasks for a in (t.name, *t.aliases)}
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not weight > 0:
            raise ValueError(f"--task-weights wants task=weight pairs with positive weights (e.g. seg=3,depth=3), "
                             f"got {text!r}")
        task = by_alias.get(name.strip().lower())
        if task is None:
            raise ValueError(f"--task-weights names {name.strip()!r}, not one of the tasks "
                             f"{', '.join(t.name for t in tasks)}")
        if task in out:
            raise ValueError(f"--task-weights names {task} twice: {text!r}")
        out[task] = weight
    return tuple(out.items())


#: --labels' value that keeps every label.
FULL_LABELS = "full"


def scene_labels(is_scenes: bool, labels: str | None) -> str | None:
    """The label plan of a command's --labels: None gives the embedded scenes
    `tasks.label_plan.DEFAULT_PLAN` and a data folder none; 'full' none."""
    from tasks.label_plan import DEFAULT_PLAN, PLANS

    if labels is None:
        return DEFAULT_PLAN if is_scenes else None
    if labels == FULL_LABELS:
        return None
    if labels not in PLANS:
        raise ValueError(f"--labels: unknown label plan {labels!r}; known: {', '.join(PLANS)}, or {FULL_LABELS} "
                         "(every label on every image)")
    if not is_scenes:
        raise ValueError(f"--labels {labels} applies to the embedded scenes only; a data folder has the labels it "
                         f"has (--labels {FULL_LABELS}, or leave it out)")
    return labels


def task_weights_for(labels: str | None, text: str | None, tasks) -> tuple[tuple[str, float], ...]:
    """Training loss weights of a command: --task-weights None gives the label plan's weights for
    `tasks` (`LabelPlan.task_weights`; none without a plan), '' none, 'seg=3,...' those."""
    if text is None:
        from tasks.label_plan import get_plan

        names = {t.name for t in tasks}
        return tuple((n, w) for n, w in get_plan(labels).task_weights if n in names) if labels else ()
    return parse_task_weights(text, tasks)
