"""Counting what jax logs inside a block: the programs XLA compiles (the names jax logs, e.g.
'jit(stage)') and the functions it traces for jit (e.g. 'step')."""

from __future__ import annotations

import contextlib
import logging
import re

import jax


@contextlib.contextmanager
def _logged(pattern: str):
    names: list[str] = []

    class Record(logging.Handler):
        def emit(self, record):
            m = re.search(pattern, record.getMessage())
            if m:
                names.append(m.group(1))

    handler, logger = Record(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield names
    finally:
        logger.removeHandler(handler)


def compiled_programs():
    """A context manager yielding a list that fills with the name of every program compiled inside the block."""
    return _logged(r"Finished XLA compilation of (\S+)")


def traced_functions():
    """A context manager yielding a list that fills with the name of every function traced for jit inside the block."""
    return _logged(r"Finished tracing (\S+) for jit")
