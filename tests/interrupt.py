"""Killing a script mid-run, for the tests that rerun the same command and check that it resumes."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import IO, Any


def run_until_killed(argv: Sequence[str], found: Callable[[], Any], *, cwd, env: dict, seconds: float,
                     stderr: IO | int = subprocess.DEVNULL) -> Any:
    """Start ``argv`` and poll ``found()`` every 20 ms; as soon as it returns something other than None,
    kill the process (SIGKILL: no chance to clean up) and return that. None when the process ended, or
    ``seconds`` passed, first. The process is gone when this returns, whatever happened."""
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + seconds
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen = found()
            if seen is not None:
                proc.send_signal(signal.SIGKILL)
                return seen
            time.sleep(0.02)
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
