"""Runs that stop early stop cleanly: SIGTERM (checkpoint, exit 143, resumable), a second Ctrl-C,
a NaN loss (named, last good checkpoint kept, failed in meta/ls, recoverable with a lower lr), a
disk that fills during a checkpoint (previous checkpoint intact), and running out of GPU memory."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import write_config
from typer.testing import CliRunner

from peftrun import experiment, files, interrupts
from peftrun import train as train_module
from peftrun.cli import app
from peftrun.errors import PeftrunError
from peftrun.runs import Run

CONFIG = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 40, dev_loss_size: 4}
method: {kind: prefix, prefix_len: 2, mlp_hidden: 8}
train: {lr: 1e-2, epochs: 1, batch_size: 4, loss_reduction: token_mean, checkpoint_every: 1, log_every: 1}
decode: {splits: [dev], limit: 4, num_beams: 1, max_new_tokens: 6, min_length: 100, batch_size: 2}
"""


def final_files(run) -> dict[str, bytes]:
    keep = ("adapter", "predictions", "metrics")
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.relative_to(run).parts[0] in keep
    }


def test_sigterm_checkpoints_exits_143_says_how_to_resume_and_resumes_identically(tmp_path):
    config = write_config(tmp_path, CONFIG)
    command = [sys.executable, "-m", "peftrun", "train", str(config), "--run-dir"]
    experiment.train(config, [], str(tmp_path / "reference"))  # in process: the same files, sooner
    run = tmp_path / "stopped"
    child = subprocess.Popen([*command, str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while child.poll() is None and not (run / "checkpoints" / "last.pt").exists():
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr[-2000:]
    last = [line for line in stderr.splitlines() if line.startswith("peftrun:")][-1]
    assert last.startswith("peftrun: stopped by SIGTERM after update") and f"--run-dir {run}" in last
    assert "Traceback" not in stderr
    stopped = Run(run)
    assert not stopped.in_use and stopped.status() == "incomplete" and not stopped.done
    step = stopped.checkpoint_step()
    assert step is not None and step < 10
    subprocess.run([*command, str(run)], check=True, capture_output=True)
    assert final_files(run) == final_files(tmp_path / "reference")


def test_a_second_signal_stops_at_once():
    with interrupts.graceful():
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.requested() == signal.SIGINT
        with pytest.raises(interrupts.Interrupted) as stop:
            interrupts.check("here")
        assert stop.value.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode
    assert interrupts.requested() is None


def loss_failing_at(monkeypatch, call: int, make_error):
    real = train_module.forward_losses
    calls = {"n": 0}

    def patched(*args, **kwargs):
        calls["n"] += 1
        ((numerator, denominator),) = real(*args, **kwargs)
        if calls["n"] == call:
            return [(make_error(numerator), denominator)]
        return [(numerator, denominator)]

    monkeypatch.setattr(train_module, "forward_losses", patched)


def test_a_nan_loss_stops_naming_the_update_keeps_the_last_good_checkpoint_and_can_recover(
    tmp_path, monkeypatch
):
    config = write_config(tmp_path, CONFIG)
    loss_failing_at(monkeypatch, 3, lambda n: n * float("nan"))
    with pytest.raises(PeftrunError, match=r"training diverged: the loss is nan at update 3; .*update 2"):
        experiment.train(config, [], str(tmp_path / "run"))
    run = Run(tmp_path / "run")
    assert run.checkpoint_step() == 2 and run.status() == "failed"
    assert run.meta()["error"].startswith("PeftrunError: training diverged")
    listing = CliRunner().invoke(app, ["ls", str(tmp_path)])
    assert listing.output.split()[0] == "failed"
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["train", str(config), "train.lr=1e-3", "--run-dir", str(run.path)])
    assert result.exit_code == 2 and "different run" in result.output  # a changed config needs the flag
    path, results = experiment.train(config, ["train.lr=1e-3"], str(run.path), resume_from_last_good=True)
    assert results is not None and run.done
    meta = run.meta()
    assert len(meta["recovered"]) == 1 and "lr: 0.01" in meta["recovered"][0]["previous_config"]
    steps = [r["step"] for r in run.read_log() if "loss" in r]
    assert steps == list(range(1, 11))  # the lines after the last good checkpoint were not kept twice
    lrs = [r["lr"] for r in run.read_log() if "loss" in r]
    assert lrs[2] == pytest.approx(1e-3 * 7 / 10)  # update 3 onwards: the new lr on the same schedule


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    config = write_config(tmp_path, CONFIG)
    real_open = open
    writes = {"n": 0}

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "last.pt" in str(path) and "w" in mode:
            writes["n"] += 1
            if writes["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(files, "open", full_disk_open, raising=False)
    with pytest.raises(PeftrunError, match=r"cannot write .*last.pt: the disk is full; its previous version"):
        experiment.train(config, [], str(tmp_path / "run"))
    run = Run(tmp_path / "run")
    assert run.checkpoint_step() == 2  # the second checkpoint, whole
    assert not list(run.path.rglob("*.tmp")) and not run.in_use


def test_out_of_gpu_memory_names_the_batch_and_what_lowers_memory(tmp_path, monkeypatch):
    config = write_config(tmp_path, CONFIG)

    def out_of_memory(_numerator):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    loss_failing_at(monkeypatch, 2, out_of_memory)
    with pytest.raises(PeftrunError) as err:
        experiment.train(config, [], str(tmp_path / "run"))
    message = str(err.value)
    assert "out of GPU memory at update 2 with train.batch_size=4" in message
    assert "train.batch_size=2 train.grad_accum=2" in message and "data.max_source_tokens" in message
    assert "checkpoint (update 1) is valid" in message and "\n" not in message
    assert Run(tmp_path / "run").checkpoint_step() == 1
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["status"] == "failed"
