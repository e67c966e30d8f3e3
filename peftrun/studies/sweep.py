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
from dataclasses import dataclass
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
    reselect: bool = False,
) -> dict[str, Any]:
    """Expand, validate, and (unless `dry_run`) execute a sweep (`pack` > 1: up to that many
    compatible runs train packed in one process, peftrun.packing). Returns the summary `--json`
    prints: the sweep's name and folder, every run with its state, and counts. A sweep with
    `select:` tunes on dev and decodes test for the winners only (studies/selection.py)."""
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
    options = Execution(workers, executor, fail_fast, echo, cluster, pack)
    if sweep.spec.select is not None:
        return run_selection(sweep, configs, states, options, dry_run, reselect)
    if dry_run:
        pending = [p for p in sweep.points if states[p.name] != RunState.DONE]
        packed = {
            p.name: [q.name for q in job.points]
            for job in plan_jobs(sweep, pending, configs, pack)
            if job.pack_file
            for p in job.points
        }
        return _summary(sweep, [PointResult(p, states[p.name]) for p in sweep.points], packed, dry_run=True)
    results, packed = execute(sweep, sweep.points, configs, states, options)
    return _summary(sweep, results, packed)


@dataclass
class Execution:
    """How a sweep's pending runs are executed (the command line's options)."""

    workers: int | None
    executor: str
    fail_fast: bool
    echo: Any
    cluster: str | None
    pack: int


def execute(
    sweep: Sweep,
    points: list[Point],
    configs: dict[str, Any],
    states: dict[str, RunState],
    options: Execution,
    listed: list[Point] | None = None,
) -> tuple[list[PointResult], dict[str, list[str]]]:
    """Run the points that are not DONE (sweep.json lists `listed`, by default `points`); their results."""
    echo = options.echo
    sweep.points = listed or points
    pending = [p for p in points if states[p.name] != RunState.DONE]
    jobs = plan_jobs(sweep, pending, configs, options.pack)
    packed = {p.name: [q.name for q in job.points] for job in jobs if job.pack_file for p in job.points}
    manifest = Manifest(sweep, {p.name: states[p.name] for p in sweep.points}, packed=packed)
    manifest.write()
    write_pack_files(jobs)
    skipped = [PointResult(p, RunState.SKIPPED) for p in points if states[p.name] == RunState.DONE]
    echo(f"[sweep] {sweep.name}: {len(points)} runs, {len(skipped)} already done, {len(pending)} to run")
    if packed:
        processes = sum(1 for job in jobs if job.pack_file)
        echo(f"[sweep] {len(packed)} runs packed into {processes} processes (--pack {options.pack})")
    if not jobs:
        return skipped, packed
    workers = options.workers or executors.default_workers()
    run_jobs = executors.EXECUTORS[options.executor]
    results = run_jobs(sweep, jobs, manifest, workers, options.fail_fast, echo, cluster=options.cluster)
    return skipped + results, packed


def run_selection(
    sweep: Sweep,
    configs: dict[str, Any],
    states: dict[str, RunState],
    options: Execution,
    dry_run: bool,
    reselect: bool,
) -> dict[str, Any]:
    """Tune on dev, test once: the grid (dev only), each group's winner, the winners' other seeds,
    then test decoded for the winners' runs alone."""
    from peftrun.studies import selection

    spec = sweep.spec.select
    datasets = {cfg.data.dataset for cfg in configs.values()}
    for dataset in datasets:
        selection.check_metric(spec, dataset)
    candidates = list(sweep.points)
    grid_points = [p for p in candidates if not p.selected_seed]
    groups = settings_by_group(grid_points, configs, spec.within)
    extra = {p.setting: [] for p in grid_points}
    for point in candidates:
        if point.selected_seed:
            extra[point.setting].append(point)
    plan = {
        "rule": spec.rule(),
        "groups": {g: [s.key for s in settings] for g, settings in groups.items()},
        "grid_runs": len(grid_points),
        "winner_runs": sum(len(extra[settings[0].key]) for settings in groups.values()),
        "test_decodes": spec.test
        * sum(len(settings[0].points) + len(extra[settings[0].key]) for settings in groups.values()),
    }
    if dry_run:
        results = [PointResult(p, states[p.name]) for p in grid_points]
        sweep.points = grid_points
        return {**_summary(sweep, results, {}, dry_run=True), "selection": plan}
    results, packed = execute(sweep, grid_points, configs, states, options)
    selection.score_settings(groups, spec.metric)
    winners, undecided = selection.choose(groups, spec.metric)
    record = selection.Record(sweep.folder)
    changed = record.check_changes(winners, reselect)
    record.save(spec, groups, winners, undecided, changed)
    options.echo(f"[select] {spec.rule()}")
    for group, why in undecided.items():
        options.echo(f"[select] {group}: not decided: {why}")
    for group, key in winners.items():
        options.echo(f"[select] {group}: {key} wins on dev")
    winning = set(winners.values())
    more = [p for key in winning for p in extra[key]]
    if more:
        states.update({p.name: state(p, configs[p.name].to_yaml()) for p in more})
        for result in results:  # the grid's runs as they ended, in the manifest that now lists more
            states[result.point.name] = (
                result.manifest_state if result.state != RunState.SKIPPED else RunState.DONE
            )
        more_results, more_packed = execute(sweep, more, configs, states, options, listed=grid_points + more)
        results += more_results
        packed.update(more_packed)
    chosen = [p for p in grid_points + more if p.setting in winning]
    decoded = decode_test(sweep, chosen, record, options.echo) if spec.test else []
    summary = _summary(sweep, results, packed)
    return {
        **summary,
        "selection": {**plan, "winners": winners, "undecided": undecided, "test_decoded": decoded},
    }


def settings_by_group(points: list[Point], configs: dict[str, Any], within: list[str]) -> dict[str, list]:
    """The grid's settings (points of one setting, one per grid seed), by group, in sweep order."""
    from peftrun.studies import selection
    from peftrun.studies.report import flatten

    groups: dict[str, dict[str, selection.Setting]] = {}
    for point in points:
        group = selection.group_of(flatten(configs[point.name].model_dump(mode="json")), within)
        if not point.tuned:  # `select: false`: its own group, never merged with tuned settings
            group = f"{group} (fixed: {point.setting or 'run'})"
        settings = groups.setdefault(group, {})
        values = {k: v for k, v in point.values.items() if k not in ("train.seed", "decode.splits")}
        settings.setdefault(point.setting, selection.Setting(point.setting, values, [])).points.append(point)
    return {group: list(settings.values()) for group, settings in groups.items()}


def decode_test(sweep: Sweep, points: list[Point], record, echo) -> list[str]:
    """Decode and score test for the winners' finished runs that have not yet (their own settings)."""
    from peftrun import experiment

    decoded = []
    for point in points:
        run = Run(point.run_dir, writer=False)
        if not run.done:
            continue
        if "test" not in run.read_metrics():
            echo(f"[select] decoding test for {point.name}")
            try:
                experiment.decode(point.run_dir, ["test"])
            except Exception as err:  # one winner's failure (a user error, an OOM) spares the others
                echo(f"[select] test decoding of {point.name} failed: {type(err).__name__}: {err}")
                continue
        record.add_test_decoded(point.name)
        decoded.append(point.name)
    return decoded


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
