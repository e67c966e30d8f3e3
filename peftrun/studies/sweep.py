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
from pathlib import Path
from typing import Any

from peftrun.errors import PeftrunError
from peftrun.files import write_json
from peftrun.run_states import RunState
from peftrun.runs import Run
from peftrun.studies import executors, sweep_file
from peftrun.studies.jobs import PACKS, Job, Manifest, PointResult
from peftrun.studies.sweep_file import Point, Sweep


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


def state(point: Point, resolved_yaml: str | None = None) -> RunState:
    """new, done, running, failed, incomplete (resumes), or other-config (its folder holds
    another run: the point would be refused)."""
    run = Run(point.run_dir)
    if not point.run_dir.exists() or not any(point.run_dir.iterdir()):
        return RunState.NEW
    existing = run.resolved_config_path
    if (
        resolved_yaml is not None
        and existing.is_file()
        and existing.read_text(encoding="utf-8") != resolved_yaml
    ):
        return RunState.OTHER_CONFIG
    return run.status()


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


def count_states(results: list[PointResult]) -> dict[str, int]:
    """How many points ended in each state (the summary's `counts`)."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.state] = counts.get(result.state, 0) + 1
    return counts


def check_options(workers: int | None, executor: str, pack: int) -> None:
    """The command line's own options, checked before the sweep file is read (dry run or not)."""
    if executor not in executors.EXECUTORS:
        raise PeftrunError(f"--executor {executor!r}: choose {' or '.join(executors.EXECUTORS)}")
    if workers is not None and workers < 1:
        raise PeftrunError(f"--workers {workers}: give at least 1 (or leave it out: one per visible GPU)")
    if pack < 1:
        raise PeftrunError(f"--pack {pack}: give at least 1")


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
    check_options(workers, executor, pack)
    echo = echo or executors.echo_err
    sweep = sweep_file.load(path, root, overrides)
    if slurm:
        sweep.spec.slurm = sweep.spec.slurm.model_copy(
            update={k: v for k, v in slurm.items() if v is not None}
        )
    configs = validate(sweep)
    states = {p.name: state(p, configs[p.name].to_yaml()) for p in sweep.points}
    clashes = [p for p in sweep.points if states[p.name] == RunState.OTHER_CONFIG]
    if clashes:
        raise PeftrunError(
            f"{clashes[0].run_dir} holds a different run than sweep point {clashes[0].name} "
            f"({len(clashes)} such); use another --root or remove them"
        )
    pending = [p for p in sweep.points if states[p.name] != RunState.DONE]
    jobs = plan_jobs(sweep, pending, configs, pack)
    packed = {p.name: [q.name for q in job.points] for job in jobs if job.pack_file for p in job.points}
    if dry_run:
        return _summary(sweep, [PointResult(p, states[p.name]) for p in sweep.points], packed, dry_run=True)
    manifest = Manifest(sweep, dict(states), packed=packed)
    manifest.write()
    write_pack_files(jobs)
    skipped = [PointResult(p, RunState.SKIPPED) for p in sweep.points if states[p.name] == RunState.DONE]
    echo(
        f"[sweep] {sweep.name}: {len(sweep.points)} runs, {len(skipped)} already done, {len(pending)} to run"
    )
    if packed:
        processes = sum(1 for job in jobs if job.pack_file)
        echo(f"[sweep] {len(packed)} runs packed into {processes} processes (--pack {pack})")
    workers = workers or executors.default_workers()
    run_jobs = executors.EXECUTORS[executor]
    results = run_jobs(sweep, jobs, manifest, workers, fail_fast, echo, cluster=cluster)
    return _summary(sweep, skipped + results, packed)


def _summary(
    sweep: Sweep, results: list[PointResult], packed: dict[str, list[str]], dry_run: bool = False
) -> dict[str, Any]:
    by_name = {r.point.name: r for r in results}
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
        "counts": count_states(results),
    }
