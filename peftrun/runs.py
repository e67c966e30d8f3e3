"""The run directory: every file name in it, create, lock, resume, atomic writes, DONE (run_card.py reads
it back for `peftrun ls` and `peftrun show RUN_DIR`).

RUN/
  config.yaml            the config as given (file text; overrides are in meta.json)
  config.resolved.yaml   every value, defaults filled
  meta.json              versions, git sha, host, times, parameter counts
  train_log.jsonl        one JSON object per log line (step, loss, lr, tokens/s, dev loss)
  checkpoints/last.pt    resume point (method state, optimizer, schedule, RNG, data position)
  checkpoints/best.pt    method state with the lowest dev loss
  adapter/               what is kept after training (safetensors + adapter.json)
  predictions/SPLIT.txt, SPLIT.jsonl   one output per source; the .jsonl records also hold
                         output_tokens (EOS excluded) and truncated (the token limit hit, no EOS)
  metrics/SPLIT.json     scores, per-example scores, output_tokens_mean, truncated_pct
  DONE
  .lock                  held (flock) by the process training into the directory: pid and host
  decodes/NAME/          `peftrun decode RUN decode.*=...`: the adapter decoded with other settings,
    decode.yaml          kept apart from the run's own outputs: the overrides and the decode config
    predictions/, metrics/   as the run's own (`Run.decoded(NAME)` reads and writes them)
    .lock                held while decoding into it
  rescores/STYLE/metrics/SPLIT.json   `peftrun eval RUN --reference-style STYLE`: the run's own
                         predictions scored against STYLE (raw or tokenized) references (and
                         decodes/NAME/rescores/STYLE/: a decode's, `--decode NAME`)

Only this module spells these names (as the constants below); everything else asks a `Run` or
imports them from here.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peftrun import __version__
from peftrun.errors import PeftrunError
from peftrun.files import (
    append_line,
    fsync_dir,
    make_dir,
    read_json,
    read_json_lines,
    write_atomic,
    write_json,
)
from peftrun.run_lock import RunLock
from peftrun.run_states import Opening, RunState

GIVEN = "config.yaml"
RESOLVED = "config.resolved.yaml"
META = "meta.json"
TRAIN_LOG = "train_log.jsonl"
ADAPTER = "adapter"
ADAPTER_META = "adapter.json"
DONE = "DONE"
LOCK = ".lock"
LAST_CHECKPOINT = "checkpoints/last.pt"
BEST_CHECKPOINT = "checkpoints/best.pt"
PREDICTIONS = "predictions"
METRICS = "metrics"
DECODES = "decodes"
DECODE_SETTINGS = "decode.yaml"
RESCORES = "rescores"
ADAPTER_TMP, ADAPTER_OLD = ".adapter.tmp", ".adapter.old"


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a run directory (it has a resolved config)."""
    return (Path(path) / RESOLVED).is_file()


class Outputs:
    """A folder of predictions/SPLIT.{txt,jsonl} and metrics/SPLIT.json: a run directory's own
    (`Run`), or one decode of its adapter with other settings kept apart (`Run.decoded(NAME)`)."""

    def __init__(self, path: Path, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer  # data-parallel processes other than the first only read

    def _missing_predictions(self, path: Path, split: str) -> str:
        return f"{path} not found"

    def write_predictions(self, split: str, records: list[dict[str, Any]]) -> None:
        if not self.writer:
            return
        text = "".join(record["output"].replace("\n", " ") + "\n" for record in records)
        write_atomic(self.path / PREDICTIONS / f"{split}.txt", text)
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        write_atomic(self.path / PREDICTIONS / f"{split}.jsonl", lines)
        self._partial(split).unlink(missing_ok=True)

    def _partial(self, split: str) -> Path:
        return self.path / PREDICTIONS / f".{split}.partial.jsonl"

    def partial_predictions(self, split: str, sources: list[str]) -> dict[int, dict[str, Any]]:
        """Outputs an interrupted decode of these sources saved, by source index: each what
        `add_partial_predictions` was given ("output", and e.g. "output_tokens", "truncated")."""
        done = {}
        for record in read_json_lines(self._partial(split)):
            index = record.get("index")
            if isinstance(index, int) and index < len(sources) and sources[index] == record.get("source"):
                done[index] = {k: v for k, v in record.items() if k not in ("index", "source")}
        return done

    def add_partial_predictions(
        self, split: str, outputs: dict[int, dict[str, Any]], sources: list[str]
    ) -> None:
        """Save decoded outputs as they come (by source index; each a dict with "output")."""
        if not self.writer:
            return
        make_dir(self._partial(split).parent)
        for index, fields in sorted(outputs.items()):
            record = {"index": index, "source": sources[index], **fields}
            append_line(self._partial(split), json.dumps(record, ensure_ascii=False))

    def read_predictions(self, split: str) -> list[dict[str, Any]]:
        path = self.path / PREDICTIONS / f"{split}.jsonl"
        if not path.is_file():
            raise PeftrunError(self._missing_predictions(path, split))
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

    def prediction_splits(self) -> list[str]:
        return sorted(p.stem for p in (self.path / PREDICTIONS).glob("*.jsonl"))

    def write_metrics(self, split: str, payload: dict[str, Any]) -> None:
        if not self.writer:
            return
        write_json(self.path / METRICS / f"{split}.json", payload)

    def read_metrics(self) -> dict[str, dict[str, Any]]:
        return {p.stem: read_json(p) for p in sorted((self.path / METRICS).glob("*.json"))}

    def has_predictions(self, split: str) -> bool:
        return (self.path / PREDICTIONS / f"{split}.jsonl").is_file()

    def rescored(self, reference_style: str) -> Outputs:
        """FOLDER/rescores/STYLE: these predictions scored against other references (only
        metrics/ is written there; the predictions are read from this folder)."""
        return Outputs(self.path / RESCORES / reference_style, self.writer)

    def has_metrics(self, split: str) -> bool:
        return (self.path / METRICS / f"{split}.json").is_file()


class Decoded(Outputs):
    """RUN/decodes/NAME: the run's adapter decoded with other decoding settings (`peftrun decode RUN
    decode.num_beams=5`), its predictions and metrics laid out as the run's own, beside
    decode.yaml (the overrides and the resulting decode config)."""

    def __init__(self, run_path: Path, name: str, writer: bool = True) -> None:
        super().__init__(Path(run_path) / DECODES / name, writer)
        self.run_path, self.name = Path(run_path), name
        self._lock = RunLock(self.path / LOCK, self.path)

    def _missing_predictions(self, path: Path, split: str) -> str:
        return f"{path} not found; {self.run_path} has no {split} predictions in its {self.name} decode"

    @property
    def exists(self) -> bool:
        return (self.path / DECODE_SETTINGS).is_file()

    def settings(self) -> dict[str, Any]:
        """decode.yaml: {"overrides": [...], "decode": {...}} (empty before the first decode)."""
        import yaml

        path = self.path / DECODE_SETTINGS
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}

    def write_settings(self, overrides: list[str], decode: dict[str, Any]) -> None:
        import yaml

        if not self.writer:
            return
        values = {"overrides": list(overrides), "decode": decode}
        text = yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
        write_atomic(self.path / DECODE_SETTINGS, text)

    def lock(self) -> None:
        """Hold this decode folder's lock (one process decodes into it at a time)."""
        if self.writer:
            make_dir(self.path)
            self._lock.acquire()

    def unlock(self) -> None:
        if self.writer:
            self._lock.release()


class Run(Outputs):
    """A run directory opened for training (locked) or for reading."""

    def __init__(self, path: Path, writer: bool = True) -> None:
        super().__init__(path, writer)
        self.on_log = None  # called with every train_log.jsonl record (experiment trackers)
        self._lock = RunLock(self.path / LOCK, self.path)

    def _missing_predictions(self, path: Path, split: str) -> str:
        return f"{path} not found; run `peftrun decode {self.path} --split {split}` first"

    # ----------------------------------------------------------------- opening

    @classmethod
    def prepare(
        cls, path: Path, resolved_yaml: str, overwrite: bool, writer: bool = True, recover: bool = False
    ) -> tuple[Run, Opening]:
        """Check what is at `path` before anything is written. Returns the run and how to open it
        (run_states.Opening): new, resume (same config, unfinished), done (same config, finished),
        overwrite, or recover (`recover`: an unfinished run whose config differs only in train.*
        settings, to continue from its last good checkpoint with them, e.g. a lower lr after a divergence)."""
        run = cls(path, writer)
        _check_creatable(path)
        # A run killed before its resolved config was written left at most these: start afresh.
        leftovers = {LOCK, GIVEN}
        if not path.exists() or all(p.name in leftovers or p.name.endswith(".tmp") for p in path.iterdir()):
            return run, Opening.NEW
        existing = path / RESOLVED
        same = existing.is_file() and existing.read_text(encoding="utf-8") == resolved_yaml
        if overwrite:
            return run, Opening.OVERWRITE
        if recover and not same:
            return run, run._recoverable(existing, resolved_yaml)
        if not same:
            raise PeftrunError(
                f"{path} already holds a different run (its {RESOLVED} differs or is missing); "
                "choose another --run-dir or pass --overwrite to replace it"
            )
        return run, Opening.DONE if run.done else Opening.RESUME

    def _recoverable(self, existing: Path, resolved_yaml: str) -> Opening:
        import yaml

        if self.done:
            raise PeftrunError(f"{self.path} is finished; --resume-from-last-good continues unfinished runs")
        if not self.has_checkpoint:
            raise PeftrunError(f"{self.path} has no checkpoint to resume from; start it afresh instead")
        old = yaml.safe_load(existing.read_text(encoding="utf-8")) if existing.is_file() else {}
        new = yaml.safe_load(resolved_yaml)
        changed = [k for k in set(old) | set(new) if k != "train" and old.get(k) != new.get(k)]
        if changed:
            raise PeftrunError(
                f"--resume-from-last-good changes only train.* settings; this config also changes "
                f"{', '.join(sorted(changed))} (a different run: use another --run-dir)"
            )
        return Opening.RECOVER

    def start(self, state: str, given_text: str, resolved_yaml: str, meta: dict[str, Any]) -> None:
        """Create and lock the directory and write the config files and meta.json."""
        if not self.writer:
            return
        if state == Opening.OVERWRITE:
            shutil.rmtree(self.path)
        make_dir(self.path)
        self.lock()
        started = {"started": _now(), "resumed": [], "status": RunState.RUNNING}
        if state in (Opening.NEW, Opening.OVERWRITE):
            write_atomic(self.path / GIVEN, given_text)
            write_atomic(self.path / RESOLVED, resolved_yaml)
            write_json(self.path / META, {**environment(), **meta, **started})
        else:
            previous = self.meta() or {**environment(), **meta, **started}  # killed before meta.json
            previous.setdefault("resumed", []).append(_now())
            if state == Opening.RECOVER:  # the new train.* settings replace the old ones, on the record
                old = self.resolved_config_path.read_text(encoding="utf-8")
                previous.setdefault("recovered", []).append({"at": _now(), "previous_config": old})
                write_atomic(self.path / RESOLVED, resolved_yaml)
            previous.update(status=RunState.RUNNING, error=None)
            write_json(self.path / META, previous)

    def lock(self) -> None:
        """Hold the directory's lock (run_lock.py), or refuse with the holder's pid and host."""
        if self.writer:
            self._lock.acquire()

    def unlock(self) -> None:
        """Release the lock (safe to call when it is not held)."""
        if self.writer:
            self._lock.release()

    @property
    def in_use(self) -> bool:
        """Whether some process holds this directory's lock right now."""
        return self._lock.held_by_anyone()

    # ----------------------------------------------------------------- contents

    @property
    def done(self) -> bool:
        return (self.path / DONE).exists()

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER

    @property
    def has_adapter(self) -> bool:
        return (self.adapter_dir / ADAPTER_META).is_file()

    def decode_dir(self, name: str) -> Path:
        """RUN/decodes/NAME: where `peftrun decode RUN decode.*=... --name NAME` writes."""
        return self.path / DECODES / name

    def decoded(self, name: str) -> Decoded:
        """The decode NAME of this run's adapter (its predictions and metrics, read or written)."""
        return Decoded(self.path, name, self.writer)

    def decode_names(self) -> list[str]:
        """The names of this run's decodes with other settings (RUN/decodes/NAME)."""
        folder = self.path / DECODES
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / DECODE_SETTINGS).is_file())

    def write_adapter_meta(self, folder: Path, payload: dict[str, Any]) -> None:
        write_json(folder / ADAPTER_META, payload)

    @contextmanager
    def new_adapter_dir(self):
        """A fresh folder to save the adapter into; on success it replaces `adapter/` by renames,
        so `adapter/` is always a complete adapter or absent (a killed save is redone on resume)."""
        tmp, old = self.path / ADAPTER_TMP, self.path / ADAPTER_OLD
        shutil.rmtree(tmp, ignore_errors=True)
        make_dir(tmp)
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb+") as handle:
                    os.fsync(handle.fileno())
        shutil.rmtree(old, ignore_errors=True)
        if self.adapter_dir.exists():
            os.replace(self.adapter_dir, old)
        os.replace(tmp, self.adapter_dir)
        fsync_dir(self.path)
        shutil.rmtree(old, ignore_errors=True)

    @property
    def resolved_config_path(self) -> Path:
        return self.path / RESOLVED

    def meta(self) -> dict[str, Any]:
        path = self.path / META
        return read_json(path) if path.is_file() else {}

    def update_meta(self, **values: Any) -> None:
        if not self.writer:
            return
        write_json(self.path / META, {**self.meta(), **values})

    def log(self, record: dict[str, Any]) -> None:
        if not self.writer:
            return
        append_line(self.path / TRAIN_LOG, json.dumps(record))
        if self.on_log is not None:
            self.on_log(record)

    def read_log(self) -> list[dict[str, Any]]:
        return read_json_lines(self.path / TRAIN_LOG)

    def trim_log(self, lines: int) -> None:
        """Keep the first `lines` records: those a resumed run's checkpoint had seen written (the
        rest came after it and will be written again)."""
        if not self.writer:
            return
        records = self.read_log()
        if len(records) != lines:
            write_atomic(self.path / TRAIN_LOG, "".join(json.dumps(r) + "\n" for r in records[:lines]))

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        if not self.writer:
            return
        _torch_save(state, self.path / LAST_CHECKPOINT)

    def checkpoint_step(self) -> int | None:
        """The update the last checkpoint was written at (None without one)."""
        state = self.load_checkpoint("cpu")
        return None if state is None else state["progress"]["step"]

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / LAST_CHECKPOINT).is_file()

    def load_checkpoint(self, device) -> dict[str, Any] | None:
        path = self.path / LAST_CHECKPOINT
        if not path.is_file():
            return None
        import torch

        return torch.load(path, map_location=device, weights_only=False)

    def save_best(self, method_state: dict[str, Any]) -> None:
        if not self.writer:
            return
        _torch_save(method_state, self.path / BEST_CHECKPOINT)

    def load_best(self, device) -> dict[str, Any] | None:
        path = self.path / BEST_CHECKPOINT
        if not path.is_file():
            return None
        import torch

        return torch.load(path, map_location=device, weights_only=True)

    def finish(self) -> None:
        if not self.writer:
            return
        self.update_meta(finished=_now(), status=RunState.DONE)
        write_atomic(self.path / DONE, _now() + "\n")
        self.unlock()

    # ----------------------------------------------------------------- listing

    def status(self) -> RunState:
        """done; running (its lock is held); failed (it stopped on an error, `error` in meta.json
        says which); or incomplete (interrupted: re-running resumes it)."""
        if self.done:
            return RunState.DONE
        if self.in_use:
            return RunState.RUNNING
        failed = self.meta().get("status") == RunState.FAILED
        return RunState.FAILED if failed else RunState.INCOMPLETE


def _check_creatable(path: Path) -> None:
    """The run directory is a folder or can become one (no file at it or above it), and its
    nearest existing parent is writable: checked before any work starts."""
    if path.exists() and not path.is_dir():
        raise PeftrunError(f"run directory {path} is a file; choose another --run-dir")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PeftrunError(f"run directory {path} is under {parent}, which is a file")
            if not _writable(parent):
                raise PeftrunError(f"cannot create run directory {path}: {parent} is not writable")
            return


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _torch_save(state: Any, path: Path) -> None:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def environment() -> dict[str, Any]:
    """Versions and provenance recorded in every run's meta.json."""
    import torch
    import transformers

    return {
        "peftrun": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "git_sha": _git_sha(),
        "host": socket.gethostname(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
