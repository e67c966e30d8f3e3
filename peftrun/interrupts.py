"""Ctrl-C and SIGTERM (Slurm's pre-emption signal) end a run cleanly: the training loop finishes
the update it is in, writes a checkpoint, the run's lock is released, and peftrun exits with
128 + the signal's number (130, 143) and one line saying how to resume. A second Ctrl-C stops at
once. Outside the loop (loading, decoding, scoring) there is nothing to finish: the run stops at
the next batch; whatever was completed is on disk (checkpoints, per-batch predictions)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised where a run can stop cleanly after a signal asked it to (a BaseException, like
    KeyboardInterrupt: it is not a failure and ordinary error handling lets it through)."""

    def __init__(self, signum: int, where: str = "") -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.where = where  # e.g. "after update 120 (checkpoint written)"
        self.run_dir = None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_requested: int | None = None


def requested() -> int | None:
    """The signal that asked the run to stop, if any."""
    return _requested


def check(where: str = "") -> None:
    """Raise `Interrupted` if a signal asked to stop (call it where stopping is clean)."""
    if _requested is not None:
        raise Interrupted(_requested, where)


@contextmanager
def graceful():
    """Within: SIGINT/SIGTERM set the flag `check` reads; a second one stops at once."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers live in the main thread only
        return

    def handle(signum, _frame):
        global _requested
        if _requested is not None:  # the second signal: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        _requested = signum

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    _requested = None
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _requested = None
