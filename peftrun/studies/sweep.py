"""`peftrun sweep`: validate every point, then run what is not done, and say how it went.

Before anything is created, each point's config is built and checked against its model's
architecture (both validation phases of `peftrun train`); an invalid point is reported with its
overrides and nothing starts. Two points that resolve to the same config are refused. Then the
sweep folder gets a `sweep.json` manifest (the sweep file as given, every point with its run
directory and state, updated as runs finish), and the runs that are not DONE are handed to an
executor. Re-running a sweep skips DONE runs and resumes interrupted ones (each run resumes
itself); a failing run does not stop the others unless `fail_fast`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.runs import Run, write_json
from peftrun.studies.sweep_file import Point, Sweep

MANIFEST = "sweep.json"
LOGS = "logs"
PACKS = "packs"  # pack files of `--pack` jobs


def resolved_config(point: Point):
    """The point's config, through both validation phases; errors name the point's overrides."""
    from peftrun import config as config_module
    from peftrun.validation import check_against_model

    overrides = [*point.overrides, f"output.run_dir={json.dumps(str(point.run_dir))}"]
    try:
        cfg = config_module.load(point.base, overrides)
        check_against_model(cfg)
    except PeftrunError as err:
        shown = " ".join(point.overrides) or "(no overrides)"
        raise PeftrunError(f"sweep point {point.name} ({point.base.name} {shown}): {err}") from None
    return cfg


def validate(sweep: Sweep) -> dict[str, Any]:
    """Every point's resolved config (by point name); raises on the first bad point or on two
    points with the same config."""
    if not sweep.points:
        raise PeftrunError(f"{sweep.path} expands to no runs")
    resolved, seen = {}, {}
    for point in sweep.points:
        cfg = resolved_config(point)
        digest = cfg.short_hash()
        if digest in seen:
            raise PeftrunError(
                f"sweep points {seen[digest]} and {point.name} resolve to the same config; "
                "remove one or make them differ"
            )
        seen[digest] = point.name
        resolved[point.name] = cfg
    return resolved


def state(point: Point, resolved_yaml: str | None = None) -> str:
    """new, done, running, failed, incomplete (resumes), or other-config (its folder holds
    another run: the point would be refused)."""
    run = Run(point.run_dir)
    if not point.run_dir.exists() or not any(point.run_dir.iterdir()):
        return "new"
    existing = run.resolved_config_path
    if (
        resolved_yaml is not None
        and existing.is_file()
        and existing.read_text(encoding="utf-8") != resolved_yaml
    ):
        return "other-config"
    return run.status()


@dataclass
class Outcome:
    """How one run of this sweep invocation ended."""

    point: Point
    state: str  # done, failed, skipped (DONE before), interrupted, not-started
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Manifest:
    """`<sweep folder>/sweep.json`: what the sweep is and where each run stands."""

    sweep: Sweep
    states: dict[str, str]
    errors: dict[str, str | None] = field(default_factory=dict)
    packed: dict[str, list[str]] = field(default_factory=dict)  # run name → its packed group
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def path(self) -> Path:
        return self.sweep.folder / MANIFEST

    def update(self, name: str, state_: str, error: str | None = None) -> None:
        with self.lock:
            self.states[name] = state_
            self.errors[name] = error
            self.write()

    def write(self) -> None:
        sweep = self.sweep
        payload = {
            "name": sweep.name,
            "sweep_file": str(sweep.path),
            "sweep": sweep.text,
            "command_line_overrides": sweep.cli_overrides,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "points": [
                {
                    "name": p.name,
                    "run_dir": str(p.run_dir),
                    "base": str(p.base),
                    "overrides": list(p.overrides),
                    "values": p.values,
                    "state": self.states.get(p.name, "new"),
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


def point_outcome(point: Point, code: int, log: Path, seconds: float, interrupted: tuple) -> Outcome:
    """How a point ended when its process exited with `code` (its own or its pack's): done if its
    run is DONE, interrupted on a signal's exit code, else failed with its last error."""
    if Run(point.run_dir).done:
        return Outcome(point, "done", None, seconds)
    if code in interrupted:
        return Outcome(point, "interrupted", last_error(point, log), seconds)
    return Outcome(point, "failed", last_error(point, log), seconds)


def log_path(sweep: Sweep, point: Point) -> Path:
    return sweep.folder / LOGS / f"{point.name}.log"


def run_command(point: Point) -> list[str]:
    """Exactly what `peftrun train` would be given for this point."""
    import sys

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
        import sys

        if self.pack_file is None:
            return run_command(self.points[0])
        return [sys.executable, "-m", "peftrun", "train-packed", str(self.pack_file)]

    def log(self, sweep: Sweep) -> Path:
        if self.pack_file is None:
            return log_path(sweep, self.points[0])
        return sweep.folder / LOGS / f"{self.pack_file.stem}.log"


def plan_jobs(sweep: Sweep, pending: list[Point], configs: dict[str, Any], pack: int) -> list[Job]:
    """One job per point, or (`pack` > 1) up to `pack` compatible points per job, in sweep order:
    points whose runs can train packed on one base (peftrun.packing.pack_key); the rest alone."""
    if pack <= 1:
        return [Job([point]) for point in pending]
    from peftrun.packing import pack_key

    groups: dict[str, list[Point]] = {}
    alone = []
    for point in pending:
        key = pack_key(configs[point.name])
        if key is None:
            alone.append(point)
        else:
            groups.setdefault(key, []).append(point)
    jobs = [Job([point]) for point in alone]
    for points in groups.values():
        for start in range(0, len(points), pack):
            chunk = points[start : start + pack]
            if len(chunk) == 1:
                jobs.append(Job(chunk))
                continue
            pack_file = sweep.folder / PACKS / f"pack-{chunk[0].name}.json"
            jobs.append(Job(chunk, pack_file))
    order = {point.name: k for k, point in enumerate(pending)}
    return sorted(jobs, key=lambda job: order[job.points[0].name])


def write_pack_files(jobs: list[Job]) -> None:
    for job in jobs:
        if job.pack_file is None:
            continue
        runs = [
            {
                "config": str(p.base.resolve()),
                "overrides": list(p.overrides),
                "run_dir": str(p.run_dir.resolve()),
            }
            for p in job.points
        ]
        job.pack_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(job.pack_file, {"runs": runs})


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.state] = counts.get(outcome.state, 0) + 1
    return counts


def run(
    path: str | Path,
    root: str | Path = "runs",
    overrides: list[str] | None = None,
    *,
    dry_run: bool = False,
    workers: int | None = None,
    executor: str = "local",
    fail_fast: bool = False,
    slurm: dict[str, Any] | None = None,
    echo=None,
    cluster: str | None = None,
    pack: int = 1,
) -> dict[str, Any]:
    """Expand, validate, and (unless `dry_run`) execute a sweep (`pack` > 1: up to that many
    compatible runs train packed in one process, peftrun.packing). Returns the summary `--json`
    prints: the sweep's name and folder, every run with its state, and counts."""
    from peftrun.studies import executors, sweep_file

    echo = echo or executors.echo_err
    sweep = sweep_file.load(path, root, overrides)
    if slurm:
        sweep.spec.slurm = sweep.spec.slurm.model_copy(
            update={k: v for k, v in slurm.items() if v is not None}
        )
    configs = validate(sweep)
    states = {p.name: state(p, configs[p.name].to_yaml()) for p in sweep.points}
    clashes = [p for p in sweep.points if states[p.name] == "other-config"]
    if clashes:
        raise PeftrunError(
            f"{clashes[0].run_dir} holds a different run than sweep point {clashes[0].name} "
            f"({len(clashes)} such); use another --root or remove them"
        )
    pending = [p for p in sweep.points if states[p.name] != "done"]
    jobs = plan_jobs(sweep, pending, configs, pack)
    packed = {p.name: [q.name for q in job.points] for job in jobs if job.pack_file for p in job.points}
    if dry_run:
        return _summary(sweep, [Outcome(p, states[p.name]) for p in sweep.points], packed, dry_run=True)
    manifest = Manifest(sweep, dict(states), packed=packed)
    manifest.write()
    write_pack_files(jobs)
    skipped = [Outcome(p, "skipped") for p in sweep.points if states[p.name] == "done"]
    echo(
        f"[sweep] {sweep.name}: {len(sweep.points)} runs, {len(skipped)} already done, {len(pending)} to run"
    )
    if packed:
        processes = sum(1 for job in jobs if job.pack_file)
        echo(f"[sweep] {len(packed)} runs packed into {processes} processes (--pack {pack})")
    workers = workers or executors.default_workers()
    if executor == "local":
        outcomes = executors.run_local(sweep, jobs, manifest, workers, fail_fast, echo)
    elif executor == "slurm":
        outcomes = executors.run_slurm(sweep, jobs, manifest, workers, fail_fast, echo, cluster=cluster)
    else:
        raise PeftrunError(f"--executor {executor!r}: choose local or slurm")
    return _summary(sweep, skipped + outcomes, packed)


def _summary(
    sweep: Sweep, outcomes: list[Outcome], packed: dict[str, list[str]], dry_run: bool = False
) -> dict[str, Any]:
    by_name = {o.point.name: o for o in outcomes}
    runs = [
        {
            "name": p.name,
            "run_dir": str(p.run_dir),
            "state": by_name[p.name].state,
            "overrides": list(p.overrides),
            "error": by_name[p.name].error,
            **({"packed_with": packed[p.name]} if p.name in packed else {}),
        }
        for p in sweep.points
    ]
    return {
        "name": sweep.name,
        "folder": str(sweep.folder),
        "dry_run": dry_run,
        "runs": runs,
        "counts": summarize(outcomes),
    }
