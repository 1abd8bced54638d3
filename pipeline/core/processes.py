"""Process lifecycle: interrupts that cannot be swallowed, and liveness of other processes.

Some libraries catch KeyboardInterrupt and carry on (scikit-learn's MLP
fit stops early and returns a half-trained model), which would let an
interrupted stage record wrong results as a success. Inside
`interrupts_raise_stage_interrupted()`, SIGINT and SIGTERM raise
`StageInterrupted` instead, which derives from BaseException only, so no
`except KeyboardInterrupt` or `except Exception` on the way can hide it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator


class StageInterrupted(BaseException):
    """The stage received SIGINT or SIGTERM; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


def _raise(signum: int, frame: object) -> None:
    raise StageInterrupted(signum)


@contextlib.contextmanager
def interrupts_raise_stage_interrupted() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `StageInterrupted` for the duration of the block."""
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """Let a short critical section (committing a stage's outputs) run whole: SIGINT and SIGTERM are ignored.

    Swapping the Python handlers (not the thread's signal mask) works whichever
    of the process's threads the kernel delivers the signal to. A stage
    interrupted this late has finished its work, so it completes.
    """
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def pid_alive(pid: int) -> bool:
    """True if a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
