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


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Calls main(argv); a user error becomes a one-line message and exit 2."""
    try:
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
