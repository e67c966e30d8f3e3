"""What a sweep hands its executors and gets back: the jobs (one child process each), the
`sweep.json` manifest they update, and how each point ended (`PointResult`).

Shared by sweep.py (which plans) and executors.py (which runs), so that neither imports the other.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from peftrun.files import read_json, write_json
from peftrun.run_states import RunState
from peftrun.runs import Run
from peftrun.studies.sweep_file import Point, Sweep

MANIFEST = "sweep.json"
LOGS = "logs"
PACKS = "packs"  # pack files of `--pack` jobs


@dataclass
class PointResult:
    """How one point ended in this sweep invocation."""

    point: Point
    state: RunState  # done, failed, skipped (DONE before), interrupted, not-started
    error: str | None = None
    seconds: float = 0.0

    @property
    def manifest_state(self) -> RunState:
        """What sweep.json records: an interrupted run is an incomplete one (it resumes)."""
        return RunState.INCOMPLETE if self.state == RunState.INTERRUPTED else self.state


@dataclass
class Manifest:
    """`<sweep folder>/sweep.json`: what the sweep is and where each run stands."""

    sweep: Sweep
    states: dict[str, RunState]
    errors: dict[str, str | None] = field(default_factory=dict)
    packed: dict[str, list[str]] = field(default_factory=dict)  # run name → its packed group
    lock: threading.Lock = field(default_factory=threading.Lock)
    first_text: str | None = None  # `sweep_at_start`, read from an earlier sweep.json

    @property
    def path(self) -> Path:
        return self.sweep.folder / MANIFEST

    def update(self, name: str, state: RunState, error: str | None = None) -> None:
        with self.lock:
            self.states[name] = state
            self.errors[name] = error
            self.write()

    def write(self) -> None:
        sweep = self.sweep
        if self.first_text is None:
            # The sweep file as it was when the sweep first started (its declared claims live
            # there): kept through every later invocation, whatever the file says by then.
            earlier = read_json(self.path) if self.path.is_file() else {}
            self.first_text = earlier.get("sweep_at_start", earlier.get("sweep", sweep.text))
        payload = {
            "name": sweep.name,
            "sweep_file": str(sweep.path),
            "sweep": sweep.text,
            "sweep_at_start": self.first_text,
            "command_line_overrides": sweep.cli_overrides,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "points": [
                {
                    "name": p.name,
                    "run_dir": str(p.run_dir),
                    "base": str(p.base),
                    "overrides": list(p.overrides),
                    "values": p.values,
                    "state": self.states.get(p.name, RunState.NEW),
                    "error": self.errors.get(p.name),
                    **({"packed_with": self.packed[p.name]} if p.name in self.packed else {}),
                }
                for p in sweep.points
            ],
        }
        write_json(self.path, payload)


def last_error(point: Point, log: Path | None) -> str:
    """The run's error as it recorded it (meta.json), else the log's last error or last line."""
    error = Run(point.run_dir).meta().get("error") if point.run_dir.is_dir() else None
    if error:
        return error
    if log is None or not log.is_file():
        return "no log"
    lines = [
        line.strip()
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    errors = [line for line in lines if line.startswith("peftrun: error:")]
    return (errors or lines or ["(empty log)"])[-1]


def point_result(point: Point, code: int, log: Path, seconds: float, interrupted: tuple) -> PointResult:
    """How a point ended when its process exited with `code` (its own or its pack's): done if its
    run is DONE, interrupted on a signal's exit code, else failed with its last error."""
    if Run(point.run_dir).done:
        return PointResult(point, RunState.DONE, None, seconds)
    if code in interrupted:
        return PointResult(point, RunState.INTERRUPTED, last_error(point, log), seconds)
    return PointResult(point, RunState.FAILED, last_error(point, log), seconds)


def log_path(sweep: Sweep, point: Point) -> Path:
    return sweep.folder / LOGS / f"{point.name}.log"


def run_command(point: Point) -> list[str]:
    """Exactly what `peftrun train` would be given for this point."""
    return [
        sys.executable,
        "-m",
        "peftrun",
        "train",
        str(point.base),
        *point.overrides,
        "--run-dir",
        str(point.run_dir),
    ]


@dataclass
class Job:
    """What one child process runs: one point (`peftrun train`), or several packed on one base
    (`peftrun train-packed PACK_FILE`, the file written beside the sweep's logs)."""

    points: list[Point]
    pack_file: Path | None = None

    @property
    def name(self) -> str:
        first = self.points[0].name
        return first if self.pack_file is None else f"pack {self.pack_file.stem} ({len(self.points)} runs)"

    def command(self) -> list[str]:
        if self.pack_file is None:
            return run_command(self.points[0])
        return [sys.executable, "-m", "peftrun", "train-packed", str(self.pack_file)]

    def log(self, sweep: Sweep) -> Path:
        if self.pack_file is None:
            return log_path(sweep, self.points[0])
        return sweep.folder / LOGS / f"{self.pack_file.stem}.log"
