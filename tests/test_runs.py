"""The run directory: its lock (atomic, names the holder, taken over when stale, released on every
exit path), its states, and its `ls` row."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import write_config

from peftrun import run_card
from peftrun.errors import PeftrunError
from peftrun.runs import Run

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from peftrun.runs import Run
    run = Run(Path(sys.argv[1]))
    try:
        run.lock()
    except Exception as err:
        print("refused", err, flush=True)
        sys.exit(3)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def hold(path, seconds: float = 30.0) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_held_lock_refuses_with_the_holders_pid_and_host_and_a_killed_holder_frees_it(tmp_path):
    tmp_path.joinpath("run").mkdir()
    run = Run(tmp_path / "run")
    holder = hold(run.path)
    try:
        assert run.in_use and run.status() == "running"
        with pytest.raises(PeftrunError, match=rf"in use by process {holder.pid} on {socket.gethostname()}"):
            run.lock()
    finally:
        holder.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops the lock
        holder.wait()
    assert not run.in_use
    run.lock()  # the stale lock (its file is still there) is taken over
    assert run.in_use
    run.unlock()
    assert not (run.path / ".lock").exists() and not run.in_use


def test_a_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    run = Run(tmp_path)
    (tmp_path / ".lock").write_text("999999 some-host\n")
    run.lock()
    assert (tmp_path / ".lock").read_text().split() == [str(os.getpid()), socket.gethostname()]
    run.unlock()


def test_of_many_processes_starting_at_once_exactly_one_wins(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    first_lines = [proc.stdout.readline().split(maxsplit=1)[0] for proc in procs]
    for proc in procs:
        proc.wait()
    assert sorted(first_lines) == ["locked"] + ["refused"] * 5


def test_status_and_ls_row(tmp_path):
    run = Run(tmp_path / "run")
    run.start(
        "new", "name: x\n", "data:\n  dataset: e2e\nmodel:\n  name: tiny-gpt2\nmethod:\n  kind: full\n", {}
    )
    row = run_card.summary(run)
    assert row["status"] == "running" and row["method"] == "full" and row["key_metric"] == "BLEU"
    run.write_metrics("dev", {"scores": {"BLEU": 0.5}})
    run.finish()
    row = run_card.summary(run)
    assert row["status"] == "done" and row["scores"] == {"dev": 0.5} and not run.in_use


def test_prepare_tells_new_resume_done_and_refuses_another_config(tmp_path):
    path = tmp_path / "run"
    assert Run.prepare(path, "a: 1\n", overwrite=False)[1] == "new"
    Run(path).start("new", "", "a: 1\n", {})
    Run(path).unlock()
    assert Run.prepare(path, "a: 1\n", overwrite=False)[1] == "resume"
    with pytest.raises(PeftrunError, match="different run"):
        Run.prepare(path, "a: 2\n", overwrite=False)
    assert Run.prepare(path, "a: 2\n", overwrite=True)[1] == "overwrite"


TINY = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 16, dev_loss_size: 4}
method: {kind: prefix, prefix_len: 2, mlp_hidden: 16}
train: {lr: 1e-3, epochs: 1, batch_size: 8, loss_reduction: token_mean, select: best, checkpoint_every: 1}
decode: {splits: [dev], limit: 2, num_beams: 1, max_new_tokens: 4}
"""


def test_a_run_that_fails_after_training_releases_its_lock(tmp_path):
    """train.select=best with no dev evaluation is a user error raised after training: the lock
    must not outlive it (else `peftrun ls` shows the run as running forever)."""
    from peftrun import experiment

    config = write_config(tmp_path, TINY.replace("dev_loss_size: 4", "dev_loss_size: 1"))
    with pytest.raises(PeftrunError):
        # eval_every=100 never fires and epoch-end evaluation is off: no best checkpoint exists
        experiment.train(config, ["train.eval_every=100"], str(tmp_path / "run"))
    run = Run(tmp_path / "run")
    assert run.status() == "failed" and not run.in_use
    assert run.meta()["error"].startswith("PeftrunError: train.select=best")
    run.lock()  # and another process (or this one) can take it
    run.unlock()


def test_an_exception_inside_training_releases_the_lock(tmp_path):
    from peftrun import experiment

    def boom(step):
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        experiment.train(write_config(tmp_path, TINY), [], str(tmp_path / "run"), on_update=boom)
    assert Run(tmp_path / "run").status() == "failed"
    assert run_card.summary(Run(tmp_path / "run"))["error"] == "RuntimeError: simulated crash"
    started = time.perf_counter()
    Run(tmp_path / "run").lock()
    assert time.perf_counter() - started < 1
