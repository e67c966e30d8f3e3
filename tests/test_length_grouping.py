"""Length-grouped training batches (`data.group_by_length`): a seeded order that varies per
epoch and seed, covers every example once per epoch, leaves ~1% padding on E2E instead of
~27-35%, resumes mid-epoch on the same next batch, and is each run's own in a pack and each
process's share under data parallelism. Off (the default) it is the plain shuffled order,
batch for batch as before the key existed."""

from __future__ import annotations

import math
import random

import pytest
import yaml
from conftest import ROOT, write_config

from peftrun import config as config_module
from peftrun import experiment, packing
from peftrun import train as train_module
from peftrun.batch_order import epoch_batches, epoch_order, example_lengths, grouped_batches
from peftrun.config import DataConfig
from peftrun.data import load_pairs
from peftrun.data.formats import DecoderOnlyFormat
from peftrun.distributed import Processes


def lengths_of(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(25, 103) for _ in range(n)]


def padding(batches: list[list[int]], lengths: list[int]) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / sum(len(b) * max(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("n,size", [(1000, 8), (1003, 8), (37, 5), (401, 8), (5, 32)])
def test_every_example_once_per_epoch_in_as_many_batches_as_plain_shuffling(n, size):
    lengths = lengths_of(n)
    for epoch in range(3):
        batches = grouped_batches(lengths, size, seed=101, epoch=epoch)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert len(batches) == math.ceil(n / size) == len(epoch_batches(n, size, 101, epoch))
        assert all(1 <= len(b) <= size for b in batches)
        assert sum(len(b) < size for b in batches) == (1 if n % size else 0)


def test_the_grouped_order_is_a_function_of_the_seed_and_the_epoch():
    lengths = lengths_of(2000)
    same = grouped_batches(lengths, 8, seed=101, epoch=0)
    assert grouped_batches(list(lengths), 8, seed=101, epoch=0) == same
    assert grouped_batches(lengths, 8, seed=102, epoch=0) != same
    assert grouped_batches(lengths, 8, seed=101, epoch=1) != same
    # The batches come shuffled, not in length order within their mega-batch (of 50 batches).
    means = [sum(lengths[i] for i in b) / len(b) for b in same][:50]
    assert means != sorted(means) and means != sorted(means, reverse=True)


def test_grouping_off_is_the_plain_order_of_before():
    n, size = 103, 8
    order = epoch_order(n, 101, 2)
    assert [i for b in epoch_batches(n, size, 101, 2) for i in b] == order
    assert epoch_batches(n, size, 101, 2)[3] == order[24:32]


def test_an_old_resolved_config_and_the_quickstarts_train_on_plain_batches():
    """Absent means plain batches (what older runs trained on), and the shipped quickstarts keep
    them: with their token-mean loss, grouped batches weigh short pairs more (docs/methods.md)."""
    fixtures = sorted((ROOT / "tests/fixtures/resolved-before-protocol").glob("*.yaml"))
    assert fixtures
    for path in fixtures:
        cfg = config_module.build(yaml.safe_load(path.read_text(encoding="utf-8")))
        assert cfg.data.group_by_length is False and "group_by_length" not in cfg.to_yaml()
    for name in ("quickstart.yaml", "quickstart-tiny.yaml"):
        cfg = config_module.load(ROOT / "configs" / name)
        assert cfg.data.group_by_length is False and cfg.train.loss_reduction == "token_mean"


def test_grouped_batches_of_e2e_have_far_less_padding_than_random_ones():
    from peftrun import models

    tokenizer = models.load_tokenizer("tiny-gpt2")
    fmt = DecoderOnlyFormat(tokenizer, 1024, None, None)
    pairs = load_pairs(DataConfig(dataset="e2e"), "train")[:4000]
    lengths = example_lengths(fmt.training_batch, pairs)
    # The lengths are each example's own tokens, as the batch lays them out.
    assert lengths[:3] == [len(fmt.prompt_ids(p.source) + fmt.target_ids(p.target)) for p in pairs[:3]]
    for size in (8, 32):
        plain = padding(epoch_batches(len(pairs), size, 101, 0), lengths)
        grouped = padding(grouped_batches(lengths, size, 101, 0), lengths)
        assert plain > 0.2 and grouped < 0.03, (size, plain, grouped)


def test_lengths_of_an_encoder_decoder_count_source_and_target():
    from peftrun.config import Config
    from peftrun.session import Session

    cfg = config_module.build(
        {
            "model": {"name": "tiny-bart", "seed": 0},
            "data": {"dataset": "e2e"},
            "method": {"kind": "lora", "rank": 2},
        }
    )
    assert isinstance(cfg, Config)
    fmt = Session(cfg).format
    pairs = load_pairs(cfg.data, "train")[:5]
    batch = fmt.training_batch(pairs)["inputs"]
    want = (batch["attention_mask"].sum(1) + batch["decoder_attention_mask"].sum(1)).tolist()
    assert example_lengths(fmt.training_batch, pairs, chunk=2) == want


CONFIG = """
model: {name: tiny-gpt2, seed: 0}
data: {dataset: e2e, train_size: 60, dev_loss_size: 4, group_by_length: true}
method: {kind: prefix, prefix_len: 2, mlp_hidden: 8}
train: {lr: 1e-2, epochs: 2, batch_size: 4, grad_accum: 2, checkpoint_every: 1, log_every: 1, eval_every: 100}
decode: {splits: [dev], limit: 2, num_beams: 1, max_new_tokens: 2, batch_size: 2}
"""


def recorded(monkeypatch) -> dict[str, list[list[str]]]:
    """The micro-batches (their targets) each run trains on, by run directory name; under
    "NAME padding" the padding share of each."""
    seen: dict[str, list] = {}
    real = train_module.step_together

    def recording(parts):
        for trainee, examples in parts:
            seen.setdefault(trainee.run.path.name, []).append([pair.target for pair in examples])
            mask = trainee.make_batch(examples)["inputs"]["attention_mask"]
            seen.setdefault(f"{trainee.run.path.name} padding", []).append(1 - mask.float().mean().item())
        return real(parts)

    monkeypatch.setattr(train_module, "step_together", recording)
    return seen


class Killed(Exception):
    pass


def test_a_run_killed_mid_epoch_resumes_on_the_same_next_batch(tmp_path, monkeypatch):
    config = write_config(tmp_path, CONFIG)
    seen = recorded(monkeypatch)
    experiment.train(config, [], str(tmp_path / "straight"))
    straight = seen["straight"]
    assert len(straight) == 2 * 15  # 60 pairs in batches of 4, two epochs

    def kill(step):
        if step == 5:  # update 5 of 8 in the first epoch: micro-batch 10 of 15
            raise Killed

    with pytest.raises(Killed):
        experiment.train(config, [], str(tmp_path / "killed"), on_update=kill)
    first = seen.pop("killed")
    assert len(first) == 10
    experiment.train(config, [], str(tmp_path / "killed"))
    resumed = seen.pop("killed")
    assert first + resumed == straight  # update 5 was checkpointed: nothing seen twice, nothing skipped
    # and the batches are grouped: their lengths spread far less than plain shuffled batches'
    experiment.train(config, ["data.group_by_length=false"], str(tmp_path / "plain"))
    plain = seen["plain"]
    assert sorted(t for b in plain[:15] for t in b) == sorted(t for b in straight[:15] for t in b)
    grouped, shuffled = (sum(seen[k]) / len(seen[k]) for k in ("straight padding", "plain padding"))
    assert grouped < shuffled / 4, (grouped, shuffled)


def test_each_packed_run_keeps_its_own_grouped_order(tmp_path, monkeypatch):
    config = write_config(tmp_path, CONFIG.replace("epochs: 2", "epochs: 1"))
    runs = [["train.seed=1"], ["train.seed=2", "train.batch_size=3", "method={kind: lora, rank: 2}"]]
    seen = recorded(monkeypatch)
    for k, overrides in enumerate(runs):
        experiment.train(config, overrides, str(tmp_path / f"alone{k}"))
    members = [packing.Member(config, o, str(tmp_path / f"packed{k}")) for k, o in enumerate(runs)]
    assert [o.state for o in packing.train_pack(members)] == ["done", "done"]
    for k in range(2):
        assert seen[f"packed{k}"] == seen[f"alone{k}"]
    assert seen["alone0"] != seen["alone1"]


def test_data_parallel_processes_split_each_grouped_batch(tmp_path):
    from peftrun.runs import Run
    from peftrun.session import Session

    cfg = config_module.build(
        {
            "model": {"name": "tiny-gpt2", "seed": 0},
            "data": {"dataset": "e2e", "train_size": 30, "group_by_length": True},
            "method": {"kind": "lora", "rank": 2},
            "train": {"batch_size": 4},
        }
    )
    session = Session(cfg)
    pairs = load_pairs(cfg.data, "train")

    index = {id(pair): i for i, pair in enumerate(pairs)}

    def batches(rank: int, world: int) -> list[list[int]]:
        trainee = session.trainee(Run(tmp_path / f"r{rank}of{world}"), pairs, [])
        trainee.processes = Processes(rank, world)
        out = []
        while (examples := trainee.next_examples()) is not None:
            out.append([index[id(pair)] for pair in examples])
        return out

    whole, first, second = batches(0, 1), batches(0, 2), batches(1, 2)
    assert len(whole) == len(first) == len(second) == 8
    for batch, a, b in zip(whole, first, second, strict=True):
        assert sorted(batch) == sorted(a + b) and a == batch[0::2]
    lengths = example_lengths(session.format.training_batch, pairs)
    assert whole == grouped_batches(lengths, 4, 101, 0)
