"""Running a hostile case the way issue 41 tried it: in a subprocess under a 6 GB address-space limit and a
time limit of seconds, so that a hang or a runaway allocation fails the test instead of the machine."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

#: The address-space limit every hostile case runs under.
ADDRESS_SPACE = 6 * 2**30


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def bounded(argv: list[str], *, timeout: float = 60, cwd=None, env: dict[str, str] | None = None):
    """``argv`` run under the address-space limit: (exit status, stdout, stderr); a run past ``timeout``
    seconds is killed and fails the calling test."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "EFFNET_TEST_THREADS": "1", **(env or {})}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, preexec_fn=_limit, cwd=cwd, env=environment
    )
    return done.returncode, done.stdout, done.stderr


def effnet_cli(*args: str, timeout: float = 60, cwd=None):
    """The ``effnet`` command under the limits."""
    return bounded([sys.executable, "-m", "effnet", *args], timeout=timeout, cwd=cwd)


def python(code: str, *, timeout: float = 60, cwd=None):
    """Python code under the limits."""
    return bounded([sys.executable, "-c", code], timeout=timeout, cwd=cwd)
