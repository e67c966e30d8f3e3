"""The lock on a run directory: one process trains into it at a time.

An flock on RUN/.lock, written by hand rather than with `filelock` because the refusal must name the
holder (pid and host, written in the file) and `peftrun ls` must ask "is it held?" without waiting.
The kernel takes the lock atomically and drops it when the holder dies, even by SIGKILL, so a stale
lock is simply not held and is taken over.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from peftrun.errors import PeftrunError


class RunLock:
    """The lock file at `path` (RUN/.lock); `owner` names the directory in the refusal."""

    def __init__(self, path: Path, owner: Path) -> None:
        self.path, self.owner = Path(path), Path(owner)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the lock, or refuse with the holder's pid and host."""
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split() or ["?"]
                os.close(fd)
                where = f" on {holder[1]}" if len(holder) > 1 else ""
                raise PeftrunError(
                    f"{self.owner} is in use by process {holder[0]}{where}; wait for it or stop it first"
                ) from None
            # A releaser may have unlinked the file between our open and flock: retry on the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (safe to call when it is not held)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def held_by_anyone(self) -> bool:
        """Whether some process holds the lock right now (asked without waiting)."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
