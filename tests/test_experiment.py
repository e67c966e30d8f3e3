# ruff: noqa: E501
"""Whole runs on the tiny model: the run directory, resuming a killed run, refusing another config."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import write_config
from safetensors.torch import load_file

from peftrun import experiment
from peftrun.errors import PeftrunError
from peftrun.session import Session

TINY = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 48, dev_loss_size: 8}
method: {kind: METHOD}
train: {lr: 1e-3, epochs: 2, batch_size: 8, checkpoint_every: 2, eval_every: 3, loss_reduction: token_mean, log_every: 1}
decode: {splits: [dev], limit: 3, num_beams: 2, max_new_tokens: 8, batch_size: 3}
"""


def config(tmp_path, method="full", name="cfg.yaml"):
    return write_config(tmp_path, TINY.replace("METHOD", method), name)


class Killed(Exception):
    pass


def kill_at(step):
    def on_update(current):
        if current == step:
            raise Killed

    return on_update


@pytest.mark.parametrize("method", ["full", "prefix"])
def test_a_run_writes_everything_and_a_rerun_does_nothing(tmp_path, method):
    run_dir, results = experiment.train(config(tmp_path, method), [], str(tmp_path / "run"))
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.yaml",
        "config.resolved.yaml",
        "meta.json",
        "train_log.jsonl",
        "checkpoints",
        "adapter",
        "predictions",
        "metrics",
        "DONE",
    } <= names
    meta = json.loads((run_dir / "meta.json").read_text())
    assert {
        "peftrun",
        "torch",
        "transformers",
        "host",
        "started",
        "finished",
        "parameters",
        "reference_style",
    } <= set(meta)
    assert meta["parameters"]["trainable"] > 0
    records = [json.loads(line) for line in (run_dir / "predictions/dev.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(len(r["references"]) > 1 for r in records)
    assert len((run_dir / "predictions/dev.txt").read_text().splitlines()) == 3
    metrics = json.loads((run_dir / "metrics/dev.json").read_text())
    assert "BLEU" in metrics["scores"] and metrics["scorers"]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any("dev_loss" in r for r in log) and all(
        {"loss", "lr", "tokens_per_s"} <= set(r) for r in log if "loss" in r
    )
    again_dir, again = experiment.train(config(tmp_path, method), [], str(tmp_path / "run"))
    assert again is None and again_dir == run_dir


def test_prefix_adapter_stores_only_the_key_values(tmp_path):
    run_dir, _ = experiment.train(config(tmp_path, "prefix"), ["method.prefix_len=3"], str(tmp_path / "run"))
    tensors = load_file(run_dir / "adapter/prefix.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {"self": (4, 2, 4, 3, 64)}
    assert (
        json.loads((run_dir / "adapter/adapter.json").read_text())["parameters"]["stored"] == 4 * 2 * 256 * 3
    )


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    straight, _ = experiment.train(config(tmp_path), [], str(tmp_path / "straight"))
    with pytest.raises(Killed):
        experiment.train(config(tmp_path), [], str(tmp_path / "killed"), on_update=kill_at(5))
    assert not (tmp_path / "killed/DONE").exists()
    resumed, results = experiment.train(config(tmp_path), [], str(tmp_path / "killed"))
    assert results is not None
    a, b = load_file(straight / "adapter/model.safetensors"), load_file(resumed / "adapter/model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert json.loads((resumed / "meta.json").read_text())["resumed"]
    # The log of a resumed run is the uninterrupted run's: what was logged after the checkpoint
    # it resumed from (update 5 of the killed run) is logged once, by the resumed run.
    assert without_timing(read_log(resumed)) == without_timing(read_log(straight))


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_another_config_in_the_same_directory_is_refused(tmp_path):
    with pytest.raises(Killed):
        experiment.train(config(tmp_path), [], str(tmp_path / "run"), on_update=kill_at(1))
    with pytest.raises(PeftrunError, match="--overwrite"):
        experiment.train(config(tmp_path), ["train.lr=5e-4"], str(tmp_path / "run"))
    resolved = tmp_path / "run" / "config.resolved.yaml"
    assert yaml.safe_load(resolved.read_text())["train"]["lr"] == 1e-3  # the refusal changed nothing
    run_dir, results = experiment.train(
        config(tmp_path), ["train.lr=5e-4", "train.epochs=1"], str(tmp_path / "run"), overwrite=True
    )
    # --overwrite replaces the killed run with a whole new one, decoded and scored.
    assert results is not None and results["dev"]["instances"] == 3 and (run_dir / "DONE").exists()
    train_cfg = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())["train"]
    assert (train_cfg["lr"], train_cfg["epochs"]) == (5e-4, 1)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["overrides"] == ["train.lr=5e-4", "train.epochs=1"] and meta["resumed"] == []
    updates = 48 // 8  # one epoch
    assert meta["updates"] == updates
    # Nothing of the killed run is left: its train-log line is gone.
    assert [r["step"] for r in read_log(run_dir) if "loss" in r] == list(range(1, updates + 1))


def test_best_checkpoint_selection_and_early_stopping(tmp_path):
    from peftrun import config as config_module
    from peftrun import data
    from peftrun.decode import generate

    run_dir, _ = experiment.train(
        config(tmp_path),
        ["train.select=best", "train.early_stopping_patience=1", "train.lr=5e-2", "train.epochs=3"],
        str(tmp_path / "run"),
    )
    meta = json.loads((run_dir / "meta.json").read_text())
    dev = [r for r in read_log(run_dir) if "dev_loss" in r]
    scheduled = 3 * 48 // 8
    # Patience 1: training stops at the first dev evaluation (every 3 updates) that is no better
    # than the best so far, before the schedule's end; every evaluation before it improved.
    assert meta["stopped_early"] is True
    assert meta["updates"] == dev[-1]["step"] < scheduled
    assert len(dev) >= 2 and dev[-1]["dev_loss"] >= min(r["dev_loss"] for r in dev[:-1])
    assert all(b["dev_loss"] < a["dev_loss"] for a, b in zip(dev[:-2], dev[1:-1], strict=True))
    best_loss = min(r["dev_loss"] for r in dev)
    assert meta["best_dev_loss"] == pytest.approx(best_loss)
    # The stored adapter is the best state (by dev loss), not the last one.
    best = torch.load(run_dir / "checkpoints/best.pt", weights_only=True)
    last = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)["method"]
    stored = load_file(run_dir / "adapter/model.safetensors")
    assert stored
    assert [key for key in stored if not torch.equal(stored[key], best[key])] == [], "stored != best"
    assert any(not torch.equal(stored[key], last[key]) for key in stored), "stored the last state"
    # ... and it is what was decoded: the best state decodes to the stored predictions.
    cfg = config_module.load(run_dir / "config.resolved.yaml")
    session = Session(cfg)
    session.method.load_training_state(best)
    instances = data.load_instances(cfg.data, "dev")[: cfg.decode.limit]
    outputs = generate(
        session.model,
        session.method,
        session.format,
        [i.source for i in instances],
        cfg.decode,
        session.device,
    )
    records = [json.loads(line) for line in (run_dir / "predictions/dev.jsonl").read_text().splitlines()]
    assert [r["output"] for r in records] == outputs
