"""Which instances a run decodes and which dev pairs its dev loss reads (issue 25 section 5):
`decode.sample` (N at random, seeded, in file order, the same in every run), the dev-loss draw kept
apart from it, and the keys added for this (and for layouts, ICL draws) left out of old runs'
resolved configs."""

from __future__ import annotations

import json

import pytest
from conftest import write_config

from peftrun import config as config_module
from peftrun import data, experiment
from peftrun.config import DataConfig, DecodeConfig, build, parse_yaml
from peftrun.errors import PeftrunError


def test_decode_sample_is_seeded_in_file_order_and_nested():
    cfg = DataConfig(dataset="e2e")
    everything = data.load_instances(cfg, "dev")
    position = {instance.id: i for i, instance in enumerate(everything)}
    sample = data.decode_instances(cfg, DecodeConfig(sample=20), "dev")
    assert len({i.id for i in sample}) == 20
    assert [position[i.id] for i in sample] == sorted(position[i.id] for i in sample)  # file order
    assert sample == data.decode_instances(cfg, DecodeConfig(sample=20), "dev")  # same N and seed
    assert sample != everything[:20]  # at random, not the first N
    assert [position[i.id] for i in sample][:5] == [17, 44, 68, 118, 125]  # the draw is pinned
    other = data.decode_instances(cfg, DecodeConfig(sample=20, sample_seed=1), "dev")
    assert {i.id for i in other} != {i.id for i in sample}
    smaller = data.decode_instances(cfg, DecodeConfig(sample=8), "dev")
    assert {i.id for i in smaller} < {i.id for i in sample}  # a sample holds every smaller one
    assert data.decode_instances(cfg, DecodeConfig(sample=10_000), "dev") == everything
    assert data.decode_instances(cfg, DecodeConfig(limit=3), "dev") == everything[:3]
    assert data.decode_instances(cfg, DecodeConfig(), "dev") == everything


def test_dev_loss_pairs_are_drawn_apart_from_the_decode_sample():
    cfg = DataConfig(dataset="e2e", dev_loss_size=300)
    decode = DecodeConfig(splits=("dev",), sample=200)
    decoded = {i.source for i in data.decode_instances(cfg, decode, "dev")}
    pairs = data.load_pairs(cfg, "dev", decode)
    assert len(pairs) == 300 and not decoded & {p.source for p in pairs}
    assert pairs == data.load_pairs(cfg, "dev", decode)  # seeded
    # Without a sample (or when dev is not decoded), the old draw, which may share sources.
    old = data.load_pairs(cfg, "dev")
    assert data.load_pairs(cfg, "dev", DecodeConfig()) == old
    assert data.load_pairs(cfg, "dev", DecodeConfig(splits=("test",), sample=200)) == old
    assert decoded & {p.source for p in old}
    # Sources dropped (a plain language model): still apart, by the sources the pairs had.
    dropped = data.load_pairs(cfg.model_copy(update={"drop_sources": True}), "dev", decode)
    assert [p.target for p in dropped] == [p.target for p in pairs]
    with pytest.raises(PeftrunError, match="decode.sample=600 takes every dev source"):
        data.load_pairs(cfg, "dev", DecodeConfig(sample=600))


def test_limit_and_sample_together_are_one_config_error(tmp_path):
    path = write_config(tmp_path, "decode: {limit: 5, sample: 5}\n")
    with pytest.raises(PeftrunError) as caught:
        config_module.load(path)
    assert str(caught.value) == (
        "config error: decode: decode.limit (the first N) and decode.sample (N at random) exclude each "
        "other; set one"
    )


RUN = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 24}
method: {kind: icl, k: 2, draw: per-seed}
train: {epochs: 0, seed: SEED}
decode: {splits: [dev], sample: 3, num_beams: 1, max_new_tokens: 3}
"""


def test_runs_with_the_same_sample_decode_the_same_instances(tmp_path):
    """Two runs (other seeds: other demonstrations under draw: per-seed) decode the same instances,
    so their rows pair by instance id."""
    records, demonstrations = [], []
    for seed in (1, 2):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        run_dir, _ = experiment.train(
            write_config(folder, RUN.replace("SEED", str(seed))), [], str(folder / "run")
        )
        records.append(
            [json.loads(line) for line in (run_dir / "predictions/dev.jsonl").read_text().splitlines()]
        )
        demonstrations.append(json.loads((run_dir / "adapter/icl.json").read_text()))
    ids = [[r["id"] for r in run] for run in records]
    dev = data.load_instances(DataConfig(dataset="e2e"), "dev")
    assert ids[0] == ids[1] == [dev[i].id for i in (68, 118, 129)]  # drawn with seed 0, file order
    assert [d["seed"] for d in demonstrations] == [1, 2] and demonstrations[0]["draw"] == "per-seed"
    assert demonstrations[0]["demonstrations"] != demonstrations[1]["demonstrations"]


# --------------------------------------------------------------------------- old runs unchanged

NEW_KEYS = {
    "data": ("source_prefix", "format", "instruction"),
    "decode": ("sample", "sample_seed"),
    "method": ("draw",),
}

OLD_RESOLVED = """\
name: null
model:
  name: tiny-gpt2
  attention: sdpa
  seed: null
data:
  dataset: e2e
  reference_style: raw
  data_dir: null
  files: {}
  url_file: null
  extrapolation: null
  drop_sources: false
  train_size: 24
  subset_seed: 0
  dev_loss_size: 4
  max_source_tokens: null
  max_target_tokens: null
method:
  kind: icl
  k: 2
  seed: 0
"""


def test_old_configs_resolve_to_the_same_yaml_without_the_new_keys():
    """A run made before these keys (an ICL run, its config.resolved.yaml holding method.seed: 0)
    resolves to the same sections again; at their defaults the new keys are not written."""
    cfg = build(parse_yaml(OLD_RESOLVED, "old run"))
    dumped = cfg.dump()
    for section, keys in NEW_KEYS.items():
        assert not set(keys) & set(dumped[section]), section
    again = cfg.to_yaml()
    assert again.startswith(OLD_RESOLVED)  # data and method as the old run wrote them
    assert build(parse_yaml(again, "resolved")).to_yaml() == again
    assert cfg.method.draw_seed(train_seed=7) == 0  # fixed: method.seed whatever the train seed
    # Set, they are written (and change the run's hash).
    chosen = build(
        parse_yaml(
            OLD_RESOLVED.replace("  seed: 0\n", "  seed: 0\n  draw: per-seed\n")
            + "decode: {sample: 5, sample_seed: 0}\n",
            "new run",
        )
    )
    assert chosen.dump()["method"]["draw"] == "per-seed" and chosen.dump()["decode"]["sample"] == 5
    assert "sample_seed" not in chosen.dump()["decode"]  # still at its default
    assert chosen.short_hash() != cfg.short_hash()
    assert chosen.method.draw_seed(train_seed=7) == 7
