"""Files that are complete or absent, whatever kills the process.

`write_atomic` writes a temporary file beside the target, flushes and fsyncs it, renames it over
the target and fsyncs the folder, so after a crash (SIGKILL, power loss) a reader sees the old
file or the new one, never half of one. `append_line` appends one line and fsyncs it: a killed
append leaves at most one partial last line, which `read_lines` drops. A failing write (disk full,
no permission) is a one-line PeftrunError and leaves the previous file as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_error(path: Path, err: OSError) -> PeftrunError:
    reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return PeftrunError(f"cannot write {path}: {reason}; its previous version (if any) is kept")


def make_dir(path: Path) -> None:
    """mkdir -p, with a one-line error (e.g. a run directory under a file, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise PeftrunError(f"cannot create folder {path}: a file is in the way (of it or a parent)") from None
    except OSError as err:
        raise PeftrunError(f"cannot create folder {path}: {err.strerror or err}") from None


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` so that `path` is always either the old or the new content."""
    make_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(path, err) from None
    fsync_dir(path.parent)


def write_json(path: Path, payload: Any) -> None:
    write_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def append_line(path: Path, line: str) -> None:
    """Append one line (no newline inside) and make it durable."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise write_error(path, err) from None


def read_lines(path: Path) -> list[str]:
    """A file's complete lines: a last line without its newline was cut by a crash and is dropped."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    return lines[:-1]  # the part after the last newline is empty or incomplete


def read_json_lines(path: Path) -> list[Any]:
    """Complete JSON lines of a file (see `read_lines`)."""
    return [json.loads(line) for line in read_lines(path) if line.strip()]


def read_utf8(path: Path, what: str) -> str:
    """A user's text file, or a one-line error (missing, or not UTF-8 with the byte offset)."""
    if path.is_dir():
        raise PeftrunError(f"{what} {path} is a folder; give a file")
    if not path.is_file():
        raise PeftrunError(f"{what} not found: {path}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise PeftrunError(f"{path} is not UTF-8 (byte {err.start}); re-encode it as UTF-8") from None


@lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


def digest(gguf: Path) -> str:
    """The file's sha256, hashed once per process for each (path, size, mtime)."""
    stat = gguf.stat()
    return _digest(str(gguf.resolve()), stat.st_size, stat.st_mtime_ns)
