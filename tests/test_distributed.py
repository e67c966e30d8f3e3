"""Data-parallel training through accelerate: 2 processes (gloo, CPU) with the same global batch end
with the same adapter as 1 process and identical predictions; experiment trackers get the log.

Exactness is the claim, so the runs train in float64 (`train.precision: fp64`): 2 processes and
1 differ only in summation order (each process sums its rows, then the processes' sums are
added), which moves a float64 result by ~1e-16 relative per operation, far below the 1e-9
tolerance on any machine or thread count; a wrong denominator or a lost row moves it by more."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import write_config
from safetensors.torch import load_file

from peftrun import experiment
from peftrun.errors import PeftrunError

CONFIG = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 30, dev_loss_size: 7}
method: METHOD
train: {lr: 2e-2, epochs: 1, batch_size: 5, grad_accum: 2, loss_reduction: LOSS, log_every: 1, eval_every: 1,
        precision: fp64}
decode: {splits: [dev], limit: 5, num_beams: 2, max_new_tokens: 6, min_length: 200, batch_size: 2}
"""


TOLERANCE = 1e-9  # float64: see the module docstring


def launch(config, run_dir, processes: int) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
    ]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["-m", "peftrun", "train", str(config), "--run-dir", str(run_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("method", "loss"),
    [
        ("{kind: prefix, prefix_len: 3, mlp_hidden: 16}", "token_mean"),
        pytest.param("{kind: lora, rank: 2}", "sequence_sum", marks=pytest.mark.large),
    ],
)
def test_two_processes_equal_one(tmp_path, method, loss, large, request):
    if "large" in request.node.keywords and not large:
        pytest.skip("a second method at two processes: pytest --large")
    # 5 rows per micro-batch over 2 processes (3 + 2): the split is uneven on purpose.
    config = write_config(tmp_path, CONFIG.replace("METHOD", method).replace("LOSS", loss))
    one, _ = experiment.train(config, [], str(tmp_path / "one"))
    two = launch(config, tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta["processes"] == 2
    stored = sorted(p.name for p in (one / "adapter").glob("*.safetensors"))
    for name in stored:
        a, b = load_file(str(one / "adapter" / name)), load_file(str(tmp_path / "two" / "adapter" / name))
        assert set(a) == set(b)
        for key in a:
            assert a[key].dtype == torch.float64
            assert (a[key] - b[key]).abs().max().item() < TOLERANCE, key
    single = [json.loads(line) for line in (one / "train_log.jsonl").read_text().splitlines()]
    double = [json.loads(line) for line in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in single] == [r["step"] for r in double]
    for a, b in zip(single, double, strict=True):
        key = "loss" if "loss" in a else "dev_loss"
        assert a[key] == pytest.approx(b[key], abs=TOLERANCE, rel=0)
    outputs = (one / "predictions" / "dev.txt").read_text()
    assert outputs == (tmp_path / "two" / "predictions" / "dev.txt").read_text()
    assert any(line.strip() for line in outputs.splitlines())  # not trivially all empty


def test_tensorboard_gets_the_training_log_and_a_missing_tracker_is_one_line(tmp_path):
    text = CONFIG.replace("METHOD", "{kind: prefix, prefix_len: 2, mlp_hidden: 8}").replace(
        "LOSS", "token_mean"
    )
    config = write_config(tmp_path, text)
    overrides = ["output.trackers=[tensorboard]", "decode.splits=[]"]
    run_dir, _ = experiment.train(config, overrides, str(tmp_path / "tb"))
    events = list((run_dir / "trackers").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    logged = [event.step for event in accumulator.Scalars("loss")]
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert logged == [r["step"] for r in records if "loss" in r]
    with pytest.raises(PeftrunError, match="pip install wandb"):
        experiment.train(config, ["output.trackers=[wandb]"], str(tmp_path / "wandb"))
    assert not (tmp_path / "wandb").exists()
