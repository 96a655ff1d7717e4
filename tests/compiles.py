"""Counting what jax logs inside a block: the programs XLA compiles (the names jax logs, e.g.
'jit(stage)') and the functions it traces for jit (e.g. 'step'); `mtl.runtime.jax_log`."""

from __future__ import annotations

from mtl.runtime import jax_log


def compiled_programs():
    """A context manager yielding a list that fills with the name of every program compiled inside the block."""
    return jax_log(r"Finished XLA compilation of (\S+)")


def traced_functions():
    """A context manager yielding a list that fills with the name of every function traced for jit inside the block."""
    return jax_log(r"Finished tracing (\S+) for jit")
