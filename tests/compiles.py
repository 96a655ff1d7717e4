"""Counting the programs XLA compiles inside a block (the names jax logs, e.g. 'jit(stage)')."""

from __future__ import annotations

import contextlib
import logging
import re

import jax


@contextlib.contextmanager
def compiled_programs():
    """Yields a list that fills with the name of every program compiled inside the block."""
    names: list[str] = []

    class Record(logging.Handler):
        def emit(self, record):
            m = re.search(r"Finished XLA compilation of (\S+)", record.getMessage())
            if m:
                names.append(m.group(1))

    handler, logger = Record(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield names
    finally:
        logger.removeHandler(handler)
