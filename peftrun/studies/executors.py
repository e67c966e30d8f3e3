"""Where a sweep's runs execute. A run is always its own `peftrun train` process, so one crash
cannot take the sweep down, and a resumed sweep resumes each run exactly as `peftrun train` does.

- `local`: N workers at once. With GPUs visible, one worker per GPU (each child sees only its GPU
  through CUDA_VISIBLE_DEVICES); on a CPU, N processes sharing the cores (each gets cores / N
  torch threads through OMP_NUM_THREADS, or fewer when the sweep's own environment asks for fewer:
  N processes with every core each would contend for them).
- `slurm`: a submitit job array, one job per run, resources from the sweep's `slurm:` block;
  submitit's local executor runs the same code path without a cluster (tests use it).

Both report progress (done / failed / running / waiting, and an ETA) on stderr after every run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from peftrun.run_states import RunState
from peftrun.studies.jobs import Job, Manifest, PointResult, point_result
from peftrun.studies.sweep_file import Sweep, time_minutes

# Exit codes of `peftrun train` that mean "stopped by a signal; it resumes": SIGINT, SIGTERM.
INTERRUPTED = (130, 143, -signal.SIGINT, -signal.SIGTERM)


class SweepProgress:
    """One line after each finished run: counts and an ETA from this invocation's run times."""

    def __init__(self, total: int, workers: int, echo: Callable[[str], None]) -> None:
        self.total, self.workers, self.echo = total, workers, echo
        self.done = self.failed = self.running = 0
        self.seconds: list[float] = []
        self.lock = threading.Lock()

    def started(self) -> None:
        with self.lock:
            self.running += 1

    def finished(self, outcome: PointResult) -> None:
        with self.lock:
            self.running -= 1
            if outcome.state == RunState.DONE:
                self.done += 1
                self.seconds.append(outcome.seconds)
            elif outcome.state in (RunState.FAILED, RunState.INTERRUPTED):
                self.failed += 1
            waiting = self.total - self.done - self.failed - self.running
            eta = ""
            if self.seconds and waiting + self.running:
                mean = sum(self.seconds) / len(self.seconds)
                eta = f", ETA {_duration(mean * (waiting + self.running) / max(1, self.workers))}"
            self.echo(
                f"[sweep] {self.done}/{self.total} done, {self.failed} failed, {self.running} running, "
                f"{waiting} waiting{eta}  (last: {outcome.point.name}: {outcome.state})"
            )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def visible_gpus() -> list[str]:
    """GPU ids a worker can be given (CUDA_VISIBLE_DEVICES order), or none on a CPU machine."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d for d in listed.split(",") if d.strip()]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity; all of the machine's elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def run_local(
    sweep: Sweep,
    jobs: list[Job],
    manifest: Manifest,
    workers: int,
    fail_fast: bool,
    echo,
    cluster: str | None = None,
) -> list[PointResult]:
    """Run `jobs` with `workers` child processes at once; Ctrl-C stops them (they checkpoint)."""
    gpus = visible_gpus()
    workers = max(1, workers)
    slots = gpus[:workers] if gpus else [None] * workers
    threads = max(1, usable_cores() // len(slots))
    inherited = os.environ.get("OMP_NUM_THREADS", "")
    if inherited.isdigit() and int(inherited) > 0:
        threads = min(threads, int(inherited))
    progress = SweepProgress(sum(len(job.points) for job in jobs), len(slots), echo)
    queue, outcomes, children = list(jobs), [], {}
    lock, stop = threading.Lock(), threading.Event()

    def worker(gpu: str | None) -> None:
        while not stop.is_set():
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
            env = dict(os.environ)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            elif len(slots) > 1:
                env["OMP_NUM_THREADS"] = str(threads)
            for point in job.points:
                progress.started()
                manifest.update(point.name, RunState.RUNNING)
            ended = _run_child(sweep, job, env, children, lock)
            with lock:
                outcomes.extend(ended)
            for outcome in ended:
                manifest.update(outcome.point.name, outcome.manifest_state, outcome.error)
                progress.finished(outcome)
                if outcome.state == RunState.FAILED and fail_fast:
                    stop.set()

    pool = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in slots]
    for thread in pool:
        thread.start()
    try:
        while any(thread.is_alive() for thread in pool):
            time.sleep(0.2)
            if stop.is_set():
                _terminate(children, lock)
    except KeyboardInterrupt:
        stop.set()
        _terminate(children, lock)
        for thread in pool:
            thread.join()
        raise
    for thread in pool:
        thread.join()
    started = {o.point.name for o in outcomes}
    never = [p for job in jobs for p in job.points if p.name not in started]
    outcomes += [PointResult(p, RunState.NOT_STARTED) for p in never]
    return outcomes


def _run_child(sweep: Sweep, job: Job, env: dict, children: dict, lock) -> list[PointResult]:
    log = job.log(sweep)
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(job.command())}\n")
        handle.flush()
        child = subprocess.Popen(job.command(), stdout=handle, stderr=subprocess.STDOUT, env=env)
        with lock:
            children[job.name] = child
        code = child.wait()
        with lock:
            children.pop(job.name, None)
    seconds = time.perf_counter() - started
    return [point_result(point, code, log, seconds, INTERRUPTED) for point in job.points]


def _terminate(children: dict, lock) -> None:
    """SIGTERM every running child: `peftrun train` checkpoints and exits (it resumes later)."""
    with lock:
        running = list(children.values())
    for child in running:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)


# --------------------------------------------------------------------------- Slurm (submitit)


def run_child_job(command: list[str], log: str) -> int:
    """One Slurm job: the run's `peftrun train` process, its output appended to the sweep's log."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        handle.flush()
        return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode


def run_slurm(
    sweep: Sweep,
    jobs: list[Job],
    manifest: Manifest,
    workers: int,
    fail_fast: bool,
    echo,
    cluster: str | None = None,
) -> list[PointResult]:
    """Submit `jobs` as one job array and wait; `cluster="local"` runs it on this machine."""
    try:
        import submitit
    except ImportError:
        from peftrun.errors import PeftrunError

        raise PeftrunError("--executor slurm needs submitit: pip install submitit") from None
    slurm = sweep.spec.slurm
    executor = submitit.AutoExecutor(folder=str(sweep.folder / "slurm"), cluster=cluster)
    parameters = dict(
        name=f"peftrun-{sweep.name}",
        timeout_min=time_minutes(slurm.time),
        gpus_per_node=slurm.gpus_per_task,
        tasks_per_node=1,
        nodes=1,
    )
    if slurm.cpus_per_task:
        parameters["cpus_per_task"] = slurm.cpus_per_task
    if slurm.mem:
        parameters["mem_gb"] = _gigabytes(slurm.mem)
    if executor.cluster == "slurm":
        parameters.update(slurm_array_parallelism=max(1, workers), slurm_partition=slurm.partition)
        if slurm.account:
            parameters["slurm_account"] = slurm.account
        if slurm.additional:
            parameters["slurm_additional_parameters"] = dict(slurm.additional)
        parameters = {k: v for k, v in parameters.items() if v is not None}
    executor.update_parameters(**parameters)
    commands = [job.command() for job in jobs]
    logs = [str(job.log(sweep)) for job in jobs]
    handles = executor.map_array(run_child_job, commands, logs)
    progress = SweepProgress(sum(len(job.points) for job in jobs), max(1, workers), echo)
    for job in jobs:
        for point in job.points:
            manifest.update(point.name, RunState.RUNNING)
            progress.started()
    outcomes: dict[str, PointResult] = {}
    started = time.perf_counter()
    while len(outcomes) < sum(len(job.points) for job in jobs):
        for job, handle in zip(jobs, handles, strict=True):
            if job.points[0].name in outcomes or not handle.done():
                continue
            for outcome in _job_outcomes(job, handle, time.perf_counter() - started, job.log(sweep)):
                outcomes[outcome.point.name] = outcome
                manifest.update(outcome.point.name, outcome.manifest_state, outcome.error)
                progress.finished(outcome)
                if outcome.state == RunState.FAILED and fail_fast:
                    _cancel_rest(jobs, handles, outcomes, manifest)
        time.sleep(0.5)
    return [outcomes[point.name] for job in jobs for point in job.points]


def _cancel_rest(jobs: list[Job], handles, outcomes: dict, manifest: Manifest) -> None:
    for job, handle in zip(jobs, handles, strict=True):
        if job.points[0].name in outcomes:
            continue
        handle.cancel(check=False)
        for point in job.points:
            outcomes[point.name] = PointResult(point, RunState.NOT_STARTED)
            manifest.update(point.name, RunState.INCOMPLETE)


def _job_outcomes(job: Job, handle, seconds: float, log: Path) -> list[PointResult]:
    try:
        code = handle.result()
    except Exception as err:  # the job itself failed (node failure, time limit, cancelled)
        lines = [line for line in str(err).splitlines() if line.strip()]
        error = f"slurm job {handle.job_id}: {lines[-1] if lines else err}"
        return [PointResult(point, RunState.FAILED, error, seconds) for point in job.points]
    return [point_result(point, code, log, seconds, INTERRUPTED) for point in job.points]


def _gigabytes(mem: str) -> int:
    text = mem.strip().upper().removesuffix("B")
    factor = {"K": 1 / 2**20, "M": 1 / 1024, "G": 1, "T": 1024}.get(text[-1:], None)
    number = float(text[:-1]) if factor is not None else float(text) / 1024  # plain numbers: MB, as sbatch
    return max(1, round(number * (factor if factor is not None else 1)))


# --executor NAME → how its jobs run (same arguments; `cluster` only matters to submitit).
EXECUTORS = {"local": run_local, "slurm": run_slurm}


# Runs at once on a machine without GPUs: two, each with half the cores. On 2 cores, 2 SmolLM2 runs
# of 1 thread each finished a sweep 1.34x sooner than one at a time with 2 threads (torch's threads
# scale less than linearly; scripts/bench_study.py, benchmarks/RESULTS.md). Not more by default:
# every run holds its own copy of the model in memory.
CPU_WORKERS = 2


def default_workers() -> int:
    """One worker per visible GPU; on a CPU, CPU_WORKERS (1 on a single core)."""
    gpus = visible_gpus()
    return len(gpus) if gpus else min(CPU_WORKERS, usable_cores())


def echo_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
