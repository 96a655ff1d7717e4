"""What the command-line scripts share about their options: numbers checked before any work, and --help.

Every numeric option is checked as the command starts, before data are
rendered or a network trained: a bad value raises one `ValueError` naming
the flag, the value and what is accepted (`mtl.cli.run` prints it as one
``error: ...`` line and exits with status 2). `HelpFormatter` makes --help
show every option's default.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

#: Encoder widths the tool trains and the budgets count: Standley's full-size (1) and half-size (0.5) networks.
SIZES = (1.0, 0.5)
#: Seeds are 32-bit: jax.random.PRNGKey(2**32) is the key of seed 0.
MAX_SEED = 2**32 - 1


def positive(flag: str, value: float) -> float:
    """A finite number above 0 (a learning rate, a time limit)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{flag} must be a positive number, got {value:g}")
    return value


def at_least(flag: str, value: int, minimum: int) -> int:
    """An integer of at least `minimum` (steps, batch size, counts, devices)."""
    if value < minimum:
        raise ValueError(f"{flag} must be at least {minimum}, got {value}")
    return value


def seed(flag: str, value: int) -> int:
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{flag} must be between 0 and {MAX_SEED} (a 32-bit seed), got {value}")
    return value


def fraction(flag: str, value: float) -> float:
    """A number in (0, 1]."""
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError(f"{flag} must be in (0, 1], got {value:g}")
    return value


def size(flag: str, value: float) -> float:
    """An encoder width the tool supports (`SIZES`)."""
    if value not in SIZES:
        raise ValueError(f"{flag} must be one of the supported encoder widths "
                         f"{', '.join(f'{s:g}' for s in SIZES)} (1 = full size, 0.5 = half size), got {value:g}")
    return float(value)


def check_training(*, steps: int, batch_size: int, lr: float, seed_value: int, data_seed: int | None = None,
                   resolution: int | None = None, size_value: float | None = None,
                   checkpoint_every: int | None = None) -> None:
    """The training numbers every training script takes, by their flag names."""
    from mtl.model import check_resolution

    at_least("--steps", steps, 1)
    at_least("--batch-size", batch_size, 1)
    positive("--lr", lr)
    seed("--seed", seed_value)
    if data_seed is not None:
        seed("--data-seed", data_seed)
    if resolution is not None:
        check_resolution(resolution)
    if size_value is not None:
        size("--size", size_value)
    if checkpoint_every is not None:
        at_least("--checkpoint-every", checkpoint_every, 1)


class HelpFormatter(argparse.HelpFormatter):
    """--help with each option's default: '(default: X)' after its text, unless
    the text already names it or there is none (a flag, no default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default: Any = action.default
        if (default is None or default is False or default is argparse.SUPPRESS or "%(default)" in text
                or "default" in text or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"
