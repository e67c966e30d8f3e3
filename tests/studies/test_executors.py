"""The local executor: one GPU per worker (each child sees only its own through
CUDA_VISIBLE_DEVICES), and Ctrl-C reaching the children. The children are small Python scripts
standing in for `peftrun train` (a job's command is the seam), so no model is trained."""

from __future__ import annotations

import _thread
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from peftrun.studies import executors, sweep_file
from peftrun.studies.jobs import Job, Manifest

# A stand-in for `peftrun train RUN_DIR`: records what it saw, then finishes (DONE) after a while,
# or, on SIGTERM (what `peftrun train` checkpoints and exits on), records that and exits 143.
CHILD = r"""
import json, os, pathlib, signal, sys, time
run_dir, seconds = pathlib.Path(sys.argv[1]), float(sys.argv[2])
run_dir.mkdir(parents=True, exist_ok=True)

def stop(signum, frame):
    (run_dir / "terminated").write_text(str(signum))
    sys.exit(143)

signal.signal(signal.SIGTERM, stop)
start = time.time()
(run_dir / "started").write_text("")
time.sleep(seconds)
seen = {"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": os.environ.get("OMP_NUM_THREADS"),
        "start": start, "end": time.time()}
(run_dir / "seen.json").write_text(json.dumps(seen))
(run_dir / "DONE").write_text("")
"""


@dataclass
class StandIn(Job):
    """A job whose process is CHILD instead of `peftrun train`."""

    seconds: float = 0.0
    script: Path | None = None

    def command(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.points[0].run_dir), str(self.seconds)]


def plan(tmp_path, points: int, seconds: float) -> tuple:
    (tmp_path / "base.yaml").write_text("model: {name: tiny-gpt2}\n")
    (tmp_path / "sweep.yaml").write_text(f"base: base.yaml\nseeds: {list(range(points))}\nname: s\n")
    sweep = sweep_file.load(tmp_path / "sweep.yaml", tmp_path / "runs")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    jobs = [StandIn([point], seconds=seconds, script=script) for point in sweep.points]
    return sweep, jobs, Manifest(sweep, {})


def fake_gpus(monkeypatch, count: int) -> None:
    """`count` CUDA devices as torch reports them, none named by CUDA_VISIBLE_DEVICES."""
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_each_worker_owns_one_gpu_and_each_child_sees_only_its_own(tmp_path, monkeypatch):
    """docs/studies.md#sweeps and executors: with GPUs visible, one worker per GPU; each child sees
    only its GPU through CUDA_VISIBLE_DEVICES. Asking for more workers than GPUs gives one per GPU."""
    fake_gpus(monkeypatch, 3)
    assert executors.default_workers() == 3
    fake_gpus(monkeypatch, 0)  # a CPU: two runs at once (half the cores each), one on a single core
    monkeypatch.setattr(executors, "usable_cores", lambda: 8)
    assert executors.default_workers() == 2
    monkeypatch.setattr(executors, "usable_cores", lambda: 1)
    assert executors.default_workers() == 1
    monkeypatch.undo()
    fake_gpus(monkeypatch, 2)
    sweep, jobs, manifest = plan(tmp_path, points=6, seconds=0.6)
    results = executors.run_local(sweep, jobs, manifest, workers=4, fail_fast=False, echo=lambda _: None)
    assert [r.state for r in results] == ["done"] * 6
    seen = [json.loads((job.points[0].run_dir / "seen.json").read_text()) for job in jobs]
    assert all(s["gpus"] in ("0", "1") for s in seen), [s["gpus"] for s in seen]  # one id each
    assert {s["gpus"] for s in seen} == {"0", "1"}  # both GPUs used
    for a in seen:  # two children running at the same time never share a GPU
        overlapping = [b for b in seen if b is not a and b["start"] < a["end"] and a["start"] < b["end"]]
        assert all(b["gpus"] != a["gpus"] for b in overlapping)
    assert max(sum(b["start"] <= a["start"] < b["end"] for b in seen) for a in seen) <= 2


def test_ctrl_c_terminates_every_running_child(tmp_path, monkeypatch):
    """Ctrl-C in `peftrun sweep` reaches every running child (SIGTERM: `peftrun train`
    checkpoints and exits, to resume later), and the sweep stops without waiting for them."""
    fake_gpus(monkeypatch, 0)
    sweep, jobs, manifest = plan(tmp_path, points=3, seconds=20)
    running = [job.points[0].run_dir for job in jobs[:2]]

    def press_ctrl_c() -> None:
        deadline = time.time() + 30
        while not all((d / "started").exists() for d in running) and time.time() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    start = time.time()
    with pytest.raises(KeyboardInterrupt):
        executors.run_local(sweep, jobs, manifest, workers=2, fail_fast=False, echo=lambda _: None)
    assert time.time() - start < 15  # did not wait out the children's 20 s
    for run_dir in running:
        assert (run_dir / "terminated").read_text() == "15"  # SIGTERM reached it
        assert not (run_dir / "DONE").exists()
    assert not (jobs[2].points[0].run_dir / "started").exists()  # the waiting one never started


@pytest.mark.parametrize(
    ("workers", "inherited", "expected"),
    [(2, None, "4"), (3, None, "2"), (2, "1", "1"), (2, "16", "4"), (1, None, None)],
    ids=["2-workers-split-8", "3-workers-floor", "sweep-env-asks-fewer", "sweep-env-asks-more", "one-worker"],
)
def test_cpu_workers_split_the_cores_through_omp_num_threads(
    tmp_path, monkeypatch, workers, inherited, expected
):
    """docs/studies.md#sweeps and executors: on a CPU, N workers share the cores, each child getting
    cores / N torch threads (OMP_NUM_THREADS, which torch reads at start), never more than the
    sweep's own environment asks for; one worker leaves torch's default (no setting)."""
    fake_gpus(monkeypatch, 0)
    monkeypatch.setattr(executors, "usable_cores", lambda: 8)
    if inherited is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", inherited)
    sweep, jobs, manifest = plan(tmp_path, points=workers, seconds=0.0)
    results = executors.run_local(
        sweep, jobs, manifest, workers=workers, fail_fast=False, echo=lambda _: None
    )
    assert [r.state for r in results] == ["done"] * workers
    seen = [json.loads((job.points[0].run_dir / "seen.json").read_text()) for job in jobs]
    assert [s["threads"] for s in seen] == [expected] * workers
