"""`peftrun generate`: JSONL in, JSONL out, one frozen base and many adapters.

Each input line is `{"id": ..., "adapter": NAME or null, "input": SOURCE}` (SOURCE as the dataset
holds it: an E2E MR such as `name[Alimentum], area[city centre]`, an XSum document; a missing
"adapter" means the first adapter given, null the base model alone). Lines are read in chunks,
rows of every adapter in a chunk are decoded together (mixed batches), and each chunk's outputs
`{"id", "adapter", "output"}` are written in input order before the next chunk is read. Reading
stdin, a chunk ends early when no more input is waiting, so the command can sit in a pipe and
answer line by line. A bad line (malformed JSON, an unknown adapter, no input) stops with its line
number, after every line before it has been written.
"""

from __future__ import annotations

import json
import select
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from peftrun.errors import PeftrunError
from peftrun.serving.adapters import FIRST_ADAPTER, AdapterSet


@dataclass
class Row:
    number: int  # line number in the input
    id: object
    adapter: str | None
    source: str


def parse(line: str, number: int, where: str, aset: AdapterSet) -> Row:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise PeftrunError(f"{where}:{number}: not a JSON object ({err.msg})") from None
    if not isinstance(record, dict):
        raise PeftrunError(
            f"{where}:{number}: expected a JSON object with 'input', got {type(record).__name__}"
        )
    source = record.get("input")
    if not isinstance(source, str):
        raise PeftrunError(f"{where}:{number}: 'input' must be a string (the source text)")
    adapter = aset.named(record.get("adapter", FIRST_ADAPTER))
    if adapter is not None and adapter not in aset.adapters:
        known = ", ".join(aset.adapters) or "none"
        raise PeftrunError(f"{where}:{number}: unknown adapter {adapter!r}; loaded: {known}")
    return Row(number, record.get("id"), adapter, source)


def _more_waiting(stream: IO[str]) -> bool:
    """Whether another line can be read from a pipe or terminal without waiting."""
    try:
        ready, _, _ = select.select([stream], [], [], 0)
    except (ValueError, OSError, TypeError):  # not a selectable stream (a file, a test's buffer)
        return True
    return bool(ready)


def chunks(
    stream: IO[str], where: str, aset: AdapterSet, size: int, interactive: bool
) -> Iterator[list[Row]]:
    """Rows in chunks of up to `size`; a bad line ends the iteration with an error only after the
    rows before it have been yielded."""
    pending: list[Row] = []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            pending.append(parse(line, number, where, aset))
        except PeftrunError:
            if pending:
                yield pending
            raise
        if len(pending) >= size or (interactive and not _more_waiting(stream)):
            yield pending
            pending = []
    if pending:
        yield pending


def run(
    adapters: list[tuple[str, str]],
    input_path: str,
    output_path: str,
    base: str | None = None,
    overrides: list[str] | None = None,
    chunk: int = 256,
    echo=None,
) -> dict:
    """Generate for every line of `input_path` ('-': stdin) into `output_path` ('-': stdout)."""
    from tqdm import tqdm

    echo = echo or (lambda message: print(message, file=sys.stderr, flush=True))
    aset = AdapterSet(base, decode_overrides=overrides or [])
    for name, path in adapters:
        aset.add(name, path)
    if aset.shared is None:
        raise PeftrunError("give at least one --adapter NAME=RUN_DIR")
    source = sys.stdin if input_path == "-" else _open(input_path, "r")
    target = sys.stdout if output_path == "-" else _open(output_path, "w")
    where = "stdin" if input_path == "-" else input_path
    started, count = time.perf_counter(), 0
    try:
        with tqdm(desc="generate", unit="row", disable=None, file=sys.stderr) as bar:
            for rows in chunks(source, where, aset, chunk, interactive=input_path == "-"):
                outputs = aset.generate([r.source for r in rows], [r.adapter for r in rows], echo)
                for row, output in zip(rows, outputs, strict=True):
                    record = {"id": row.id, "adapter": row.adapter, "output": output}
                    target.write(json.dumps(record, ensure_ascii=False) + "\n")
                target.flush()
                count += len(rows)
                bar.update(len(rows))
    except UnicodeDecodeError as err:
        raise PeftrunError(f"{where} is not UTF-8 (byte {err.start} of a line); re-encode it") from None
    finally:
        if target is not sys.stdout:
            target.close()
        if source is not sys.stdin:
            source.close()
    seconds = time.perf_counter() - started
    rate = count / max(seconds, 1e-9)
    echo(f"generated {count} outputs, {len(aset.adapters)} adapters, {seconds:.1f}s ({rate:.1f} outputs/s)")
    return {"outputs": count, "seconds": seconds, "adapters": list(aset.adapters)}


def _open(path: str, mode: str):
    try:
        return open(path, mode, encoding="utf-8")
    except OSError as err:
        raise PeftrunError(f"cannot open {path}: {err.strerror or err}") from None
