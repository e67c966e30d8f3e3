# ruff: noqa: E501
"""Dev curves during training (train.decode_every) and early stopping on a dev metric
(train.early_stopping_metric), on the tiny model: what is logged, that it changes nothing else,
that a killed and resumed run logs the same curve, the stopping rule, and the config keys."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import write_config
from safetensors.torch import load_file

from peftrun import config as config_module
from peftrun import data, experiment, packing
from peftrun.config import CURVE_METRICS
from peftrun.errors import PeftrunError
from peftrun.session import GREEDY, DevCurve, Session, curve_scores

# Full fine-tuning: the base trains with dropout, so a decode that left the model in eval mode or
# drew random numbers would change the weights. 48 pairs / 8 per update, 2 epochs: 12 updates.
TINY = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 48, dev_loss_size: 8}
method: {kind: full}
train: {lr: 3e-3, epochs: 2, batch_size: 8, checkpoint_every: 3, eval_every: 4, log_every: 1}
decode: {splits: [], num_beams: 3, max_new_tokens: 10, batch_size: 5}
"""
CURVE = ["train.decode_every=2", "train.decode_dev_size=5"]
UPDATES = 12


class Killed(Exception):
    pass


def kill_at(step):
    def on_update(current):
        if current == step:
            raise Killed

    return on_update


def read_log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records]


def curve(run_dir) -> list[dict]:
    return [r for r in read_log(run_dir) if "dev_scores" in r]


def test_the_curve_is_logged_every_n_updates_on_the_first_m_dev_sources(tmp_path, monkeypatch):
    calls = []
    real = Session.generate

    def spy(self, sources, decode_cfg):
        calls.append((list(sources), decode_cfg))
        return real(self, sources, decode_cfg)

    monkeypatch.setattr(Session, "generate", spy)
    config = write_config(tmp_path, TINY)
    run_dir, _ = experiment.train(config, CURVE, str(tmp_path / "run"))
    points = curve(run_dir)
    assert [p["step"] for p in points] == [2, 4, 6, 8, 10, 12]
    assert [p["epoch"] for p in points] == [0, 0, 0, 1, 1, 1]  # 6 updates per epoch
    assert all(set(p) == {"step", "epoch", "dev_scores", "dev_decode_size"} for p in points)
    assert all(p["dev_decode_size"] == 5 for p in points)
    assert all(list(p["dev_scores"]) == list(CURVE_METRICS["e2e"]) for p in points)  # no METEOR
    # Every point decodes the same first 5 unique dev sources in file order, greedily; the rest
    # of decode.* is the run's.
    cfg = config_module.load(run_dir / "config.resolved.yaml")
    first = [i.source for i in data.load_instances(cfg.data, "dev")[:5]]
    assert len(set(first)) == 5 and len(calls) == 6
    for sources, decode_cfg in calls:
        assert sources == first
        assert (decode_cfg.num_beams, decode_cfg.do_sample) == (1, False)
        assert (decode_cfg.max_new_tokens, decode_cfg.batch_size) == (10, 5)
    # The last point (update 12, the end) is the final weights decoded greedily and scored.
    session = Session(cfg)
    session.method.load(run_dir / "adapter")
    outputs = real(session, first, cfg.decode.model_copy(update=GREEDY))
    assert any(outputs), "the tiny model writes something, so the scores mean something"
    instances = data.load_instances(cfg.data, "dev")[:5]
    expected = curve_scores("e2e", outputs, [list(i.references) for i in instances], CURVE_METRICS["e2e"])
    assert points[-1]["dev_scores"] == expected


def test_decoding_during_training_changes_nothing_else(tmp_path):
    config = write_config(tmp_path, TINY)
    plain, _ = experiment.train(config, [], str(tmp_path / "plain"))
    curved, _ = experiment.train(config, CURVE, str(tmp_path / "curved"))
    assert len(curve(curved)) == 6 and curve(plain) == []
    a, b = load_file(plain / "adapter/model.safetensors"), load_file(curved / "adapter/model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # Every training-loss and dev-loss line is the same, bit for bit.
    others = [r for r in without_timing(read_log(curved)) if "dev_scores" not in r]
    assert others == without_timing(read_log(plain))


def test_a_killed_and_resumed_run_logs_the_same_curve(tmp_path):
    config = write_config(tmp_path, TINY)
    settings = [*CURVE, "train.early_stopping_metric=ROUGE_L", "train.early_stopping_patience=100"]
    straight, _ = experiment.train(config, settings, str(tmp_path / "straight"))
    # Killed after update 5: the checkpoint of update 3 is the resume point, so the curve point of
    # update 4 is logged by the killed run, trimmed away, and logged again by the resumed one.
    with pytest.raises(Killed):
        experiment.train(config, settings, str(tmp_path / "killed"), on_update=kill_at(5))
    assert [p["step"] for p in curve(tmp_path / "killed")] == [2, 4]
    resumed, _ = experiment.train(config, settings, str(tmp_path / "killed"))
    assert [p["step"] for p in curve(resumed)] == [2, 4, 6, 8, 10, 12]
    assert curve(resumed) == curve(straight)
    assert without_timing(read_log(resumed)) == without_timing(read_log(straight))
    best = {k: json.loads((d / "meta.json").read_text())["best_dev_score"] for k, d in
            [("straight", straight), ("resumed", resumed)]}  # fmt: skip
    assert best["straight"] == best["resumed"] and best["straight"]["metric"] == "ROUGE_L"


def scripted(monkeypatch, bleu: list[float]) -> dict[int, dict]:
    """DevCurve.scores returns the given BLEU values in turn; the method's state at each call is
    kept (by call number, 1, 2, ...)."""
    states: dict[int, dict] = {}

    def scores(self):
        states[len(states) + 1] = {k: v.clone() for k, v in self.session.method.training_state().items()}
        return {"BLEU": bleu[len(states) - 1], "NIST": 1.0}

    monkeypatch.setattr(DevCurve, "scores", scores)
    return states


def test_early_stopping_on_a_dev_metric_stops_after_patience_evaluations_without_gain(tmp_path, monkeypatch):
    # BLEU by update: 2 → 0.1, 4 → 0.3 (best), 6 → 0.3 (not better: a tie is no gain), 8 → 0.2:
    # patience 2 stops at update 8, and select=best decodes the state of update 4.
    states = scripted(monkeypatch, [0.1, 0.3, 0.3, 0.2, 0.9, 0.9])
    settings = [
        *CURVE,
        "train.early_stopping_metric=BLEU",
        "train.early_stopping_patience=2",
        "train.select=best",
    ]
    run_dir, _ = experiment.train(write_config(tmp_path, TINY), settings, str(tmp_path / "run"))
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["stopped_early"] is True and meta["stopped_at"] == 8 and meta["updates"] == 8
    assert meta["best_dev_score"] == {"metric": "BLEU", "value": 0.3, "step": 4}
    log = read_log(run_dir)
    assert [p["step"] for p in curve(run_dir)] == [2, 4, 6, 8]
    assert log[-1] == {
        "step": 8,
        "epoch": 1,
        "stopped_early": True,
        "early_stopping_metric": "BLEU",
        "best": 0.3,
        "best_step": 4,
        "evaluations_without_gain": 2,
    }
    assert max(r["step"] for r in log) == 8
    # best.pt is the state at the best BLEU (update 4), not at the best dev loss, and it is stored.
    best = torch.load(run_dir / "checkpoints/best.pt", weights_only=True)
    assert best.keys() == states[2].keys()
    assert all(torch.equal(best[k], states[2][k]) for k in best)
    stored = load_file(run_dir / "adapter/model.safetensors")
    assert [k for k in stored if not torch.equal(stored[k], states[2][k])] == []
    assert any(not torch.equal(stored[k], states[4][k]) for k in stored)


def test_a_run_that_does_not_stop_records_no_stop(tmp_path, monkeypatch):
    scripted(monkeypatch, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    settings = [*CURVE, "train.early_stopping_metric=BLEU", "train.early_stopping_patience=1"]
    run_dir, _ = experiment.train(write_config(tmp_path, TINY), settings, str(tmp_path / "run"))
    meta = json.loads((run_dir / "meta.json").read_text())
    assert (meta["stopped_early"], meta["stopped_at"], meta["updates"]) == (False, None, UPDATES)
    assert meta["best_dev_score"] == {"metric": "BLEU", "value": 0.6, "step": 12}
    assert not any("stopped_early" in r for r in read_log(run_dir))


@pytest.mark.parametrize(
    ("train", "dataset", "message"),
    [
        (
            {"early_stopping_metric": "BLUE", "decode_every": 5},
            "e2e",
            "'BLUE' is not a e2e dev curve metric; choose dev_loss or one of: BLEU, NIST",
        ),
        (
            {"early_stopping_metric": "ROUGE-2", "decode_every": 5},
            "e2e",
            "'ROUGE-2' is not a e2e dev curve metric",
        ),
        (
            {"early_stopping_metric": "BLEU", "decode_every": 5},
            "xsum",
            "'BLEU' is not a xsum dev curve metric; choose dev_loss or one of: ROUGE-1, ROUGE-2, ROUGE-L",
        ),
        (
            {"early_stopping_metric": "METEOR", "decode_every": 5},
            "e2e",
            "'METEOR' is not a e2e dev curve metric",
        ),
        (
            {"early_stopping_metric": "BLEU"},
            "e2e",
            "train: early_stopping_metric=BLEU is scored on the dev curve: set train.decode_every > 0",
        ),
        ({"early_stopping_metric": "BLEU", "decode_every": 0}, "e2e", "set train.decode_every > 0"),
    ],
)
def test_config_errors(train, dataset, message):
    with pytest.raises(PeftrunError, match="config error") as err:
        config_module.build({"data": {"dataset": dataset}, "train": train})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_valid_metric_configs():
    for dataset, metric in [("e2e", "BLEU"), ("e2e", "CIDEr"), ("xsum", "ROUGE-2"), ("xsum", "dev_loss")]:
        cfg = config_module.build(
            {"data": {"dataset": dataset}, "train": {"early_stopping_metric": metric, "decode_every": 3}}
        )
        assert cfg.train.early_stopping_metric == metric


def test_a_config_without_the_new_keys_resolves_as_before():
    new = ("decode_every", "decode_dev_size", "early_stopping_metric")
    plain = config_module.build({})
    # The train section of every run made before these keys existed.
    assert list(plain.dump()["train"]) == [
        "lr", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_steps", "weight_decay",
        "adam_betas", "adam_eps", "max_grad_norm", "precision", "seed", "loss_reduction", "eval_every",
        "checkpoint_every", "select", "early_stopping_patience", "log_every", "device",
    ]  # fmt: skip
    assert not any(key in plain.to_yaml() for key in new)
    # The keys at their defaults (and decode_every: null, also off) resolve to the same YAML and hash.
    for train in (
        {"decode_every": 0, "decode_dev_size": 64, "early_stopping_metric": "dev_loss"},
        {"decode_every": None},
    ):
        explicit = config_module.build({"train": train})
        assert explicit.to_yaml() == plain.to_yaml() and explicit.short_hash() == plain.short_hash()
    # Set, they are written and change the run.
    curved = config_module.build({"train": {"decode_every": 50, "early_stopping_metric": "BLEU"}})
    train = yaml.safe_load(curved.to_yaml())["train"]
    assert (train["decode_every"], train["early_stopping_metric"]) == (50, "BLEU")
    assert "decode_dev_size" not in train and curved.short_hash() != plain.short_hash()


PACKED = """
model: {name: tiny-gpt2, seed: 0}
data: {dataset: e2e, train_size: 16, dev_loss_size: 6}
method: {kind: prefix, prefix_len: 3, mlp_hidden: 16}
train: {lr: 3e-2, epochs: 1, batch_size: 4, log_every: 1, eval_every: 3, precision: fp64, decode_every: 2, decode_dev_size: 4}
decode: {splits: [], max_new_tokens: 8, batch_size: 4}
"""


def test_packed_runs_log_the_curves_they_log_alone(tmp_path):
    config = write_config(tmp_path, PACKED)
    runs = [["train.seed=1"], ["method={kind: lora, rank: 2}", "train.lr=5e-2", "train.seed=2"]]
    alone = [experiment.train(config, o, str(tmp_path / f"alone{k}"))[0] for k, o in enumerate(runs)]
    outcomes = packing.train_pack(
        [packing.Member(config, o, str(tmp_path / f"packed{k}")) for k, o in enumerate(runs)]
    )
    assert [o.state for o in outcomes] == ["done", "done"]
    for one, packed in zip(alone, [o.run_dir for o in outcomes], strict=True):
        assert [p["step"] for p in curve(packed)] == [2, 4]
        assert curve(packed) == curve(one)
    assert curve(alone[0]) != curve(alone[1])  # each run decodes with its own adapter


def test_with_a_decode_sample_the_curve_decodes_a_random_subset_of_it(tmp_path, monkeypatch):
    """decode.sample set: the curve's dev sources are decode.sample's seeded draw at
    train.decode_dev_size, a subset of the sample the run decodes at the end, not the first ones."""
    calls = []
    real = Session.generate

    def spy(self, sources, decode_cfg):
        calls.append(list(sources))
        return real(self, sources, decode_cfg)

    monkeypatch.setattr(Session, "generate", spy)
    config = write_config(tmp_path, TINY)
    overrides = [*CURVE, "decode.splits=[dev]", "decode.sample=12", "decode.sample_seed=3", "train.epochs=1"]
    run_dir, _ = experiment.train(config, overrides, str(tmp_path / "run"))
    cfg = config_module.load(run_dir / "config.resolved.yaml")
    decoded = [i.source for i in data.decode_instances(cfg.data, cfg.decode, "dev")]
    curve_sources = calls[0]  # 6 updates, a point every 2: 3 points of one generate() call each
    assert len(curve(run_dir)) == len(calls) == 3 and all(c == curve_sources for c in calls)
    predicted = [json.loads(line)["source"] for line in (run_dir / "predictions" / "dev.jsonl").open()]
    assert predicted == decoded and len(curve_sources) == 5 and set(curve_sources) < set(decoded)
    first = [i.source for i in data.load_instances(cfg.data, "dev")[:5]]
    assert curve_sources != first
