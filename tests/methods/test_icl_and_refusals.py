# ruff: noqa: E501
"""In-context baseline (seeded demonstrations, fewer when they do not fit, logged, reproducible),
whole runs of the new methods through `experiment.train`, and the one-line refusals of options a
model cannot take."""

from __future__ import annotations

import json

import pytest
from conftest import write_config

from peftrun import experiment, models
from peftrun.config import DataConfig, DecodeConfig
from peftrun.data import load_pairs
from peftrun.data.formats import text_format
from peftrun.errors import PeftrunError
from peftrun.methods import ICLOptions, PrefixOptions, PromptOptions, PTuningOptions
from peftrun.methods.base import attach
from peftrun.session import Session


def icl(model_name: str, k: int, seed: int = 0, max_source: int | None = None, max_new_tokens: int = 100):
    loaded = models.load(model_name, seed=0)
    method = attach(loaded, ICLOptions(k=k, seed=seed))
    data = DataConfig(dataset="e2e", max_source_tokens=max_source)
    method.initialize(load_pairs(data, "train"))
    return (
        loaded,
        method,
        method.wrap_format(text_format(loaded, data), DecodeConfig(max_new_tokens=max_new_tokens)),
    )


def test_icl_prepends_seeded_demonstrations_as_training_text():
    loaded, method, fmt = icl("tiny-gpt2", k=3)
    demos = method.demonstrations
    assert len(demos) == 3 and demos == icl("tiny-gpt2", k=3)[1].demonstrations  # same seed, same draw
    assert demos != icl("tiny-gpt2", k=3, seed=1)[1].demonstrations
    source = "name : Aromi | Type : pub"
    ids = fmt.prompt_ids(source)
    context = sum((fmt.base.demonstration_ids(d) for d in demos), [])
    assert ids == context + fmt.base.prompt_ids(source)  # demos, each " table EOS text EOS", then the query
    text = loaded.tokenizer.decode(ids)
    assert all(d.target in text for d in demos)
    assert method.take_notes() == ["icl: demonstrations per input (k=3, fewer if too long): 3 for 1 inputs"]
    assert method.counts().trainable == method.counts().stored == 0


def test_icl_uses_fewer_demonstrations_when_they_do_not_fit_and_says_so():
    _, method, fmt = icl("tiny-gpt2", k=5, max_new_tokens=400)  # 512 positions - 400 for the output
    budget = 512 - 400
    prompt = fmt.prompt_ids("name : Aromi | Type : pub")
    assert len(prompt) <= budget
    used = method.used.most_common(1)[0][0]
    assert 0 < used < 5
    assert "fewer if too long" in method.take_notes()[0]
    # BART: the budget is the encoder's source limit; an input that fills it gets no demonstrations.
    _, bart_method, bart_fmt = icl("tiny-bart", k=3, max_source=40)
    ids = bart_fmt.prompt_ids("word " * 100)
    assert len(ids) == 40 and bart_method.take_notes() == [
        "icl: demonstrations per input (k=3, fewer if too long): 0 for 1 inputs"
    ]


def test_icl_saved_demonstrations_are_reused(tmp_path):
    _, method, _ = icl("tiny-bart", k=2)
    method.save(tmp_path)
    fresh = attach(models.load("tiny-bart", seed=0), ICLOptions(k=2, seed=9))
    fresh.load(tmp_path)  # no training pairs needed: the stored draw is used
    assert fresh.demonstrations == method.demonstrations


def test_icl_draws_per_seed_only_when_asked():
    """draw: fixed (the default) gives every train.seed method.seed's draw; draw: per-seed draws
    with train.seed, through a run's Session (it seeds torch with train.seed before attaching)."""
    from peftrun.config import build

    pairs = load_pairs(DataConfig(dataset="e2e", train_size=200), "train")

    def drawn(draw: str, seed: int):
        method = Session(
            build({"method": {"kind": "icl", "k": 3, "draw": draw}, "train": {"seed": seed}})
        ).method
        method.initialize(pairs)
        return method.demonstrations

    assert drawn("fixed", 1) == drawn("fixed", 2)
    per_seed = [drawn("per-seed", seed) for seed in (1, 2)]
    assert per_seed[0] != per_seed[1] and per_seed[0] == drawn("per-seed", 1)


RUN = """
model: {name: MODEL}
data: {dataset: e2e, train_size: 24, dev_loss_size: 4}
method: METHOD
train: {lr: 1e-3, epochs: EPOCHS, batch_size: 8, loss_reduction: token_mean}
decode: {splits: [dev], limit: 2, num_beams: 2, max_new_tokens: 6, batch_size: 2}
"""


def run(tmp_path, model: str, method: str, epochs: int = 1):
    text = RUN.replace("MODEL", model).replace("METHOD", method).replace("EPOCHS", str(epochs))
    return experiment.train(write_config(tmp_path, text), [], str(tmp_path / "run"))


def test_icl_run_trains_nothing_and_says_so(tmp_path, capsys):
    run_dir, results = run(tmp_path, "tiny-gpt2", "{kind: icl, k: 2}", epochs=0)
    err = capsys.readouterr().err
    assert "trains nothing here: decoding and scoring only" in err
    assert "icl: demonstrations per input (k=2, fewer if too long): 2 for 2 inputs" in err
    assert not (run_dir / "checkpoints" / "last.pt").exists()
    saved = json.loads((run_dir / "adapter" / "icl.json").read_text())
    assert len(saved["demonstrations"]) == 2 and results["dev"]["instances"] == 2


def test_phrase_init_run_logs_the_fit_in_meta(tmp_path, capsys):
    method = "{kind: prefix, init_phrase: 'table-to-text:', mlp_hidden: 32, init_steps: 30}"
    run_dir, _ = run(tmp_path, "tiny-gpt2", method)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert len(meta["method_notes"]) == 1 and "MSE to the phrase's activations" in meta["method_notes"][0]
    assert meta["method_notes"][0] in capsys.readouterr().err
    stored = json.loads((run_dir / "adapter" / "prefix.json").read_text())
    assert stored["shapes"]["self"][3] == 8  # the phrase's 8 tiny-BPE tokens set the length


@pytest.mark.parametrize(
    ("model", "method", "weights", "shapes"),
    [
        # soft prompt: (prompt_len, d) embeddings
        ("tiny-bart", "{kind: prompt, prompt_len: 4}", "prompt.safetensors", {"prompt": (4, 128)}),
        # infix: keys/values (n_layer, 2, n_head, L, head_dim)
        (
            "tiny-gpt2",
            "{kind: prefix, variant: infix, prefix_len: 2}",
            "prefix.safetensors",
            {"self": (4, 2, 4, 2, 64)},
        ),
    ],
    ids=["bart-prompt", "gpt2-infix"],
)
def test_new_methods_run_end_to_end(tmp_path, model, method, weights, shapes):
    import torch
    from safetensors.torch import load_file

    from peftrun import config as config_module
    from peftrun import data
    from peftrun.data.examples import Pair
    from peftrun.decode import generate

    run_dir, results = run(tmp_path, model, method)
    assert (run_dir / "DONE").exists() and results["dev"]["instances"] == 2
    cfg = config_module.load(run_dir / "config.resolved.yaml")
    instances = data.load_instances(cfg.data, "dev")[:2]
    # One prediction per dev instance, in order, in both prediction files; its metrics beside.
    records = [json.loads(line) for line in (run_dir / "predictions/dev.jsonl").read_text().splitlines()]
    assert [(r["id"], r["source"]) for r in records] == [(i.id, i.source) for i in instances]
    outputs = [r["output"] for r in records]
    assert (run_dir / "predictions/dev.txt").read_text().splitlines() == outputs
    metrics = json.loads((run_dir / "metrics/dev.json").read_text())
    assert metrics["instances"] == 2 and metrics["scores"] == results["dev"]["scores"]
    assert isinstance(metrics["scores"]["BLEU"], float)
    # The adapter holds the trained state as the method stores it, and nothing else.
    stored = load_file(run_dir / "adapter" / weights)
    assert {k: tuple(v.shape) for k, v in stored.items()} == shapes
    counted = json.loads((run_dir / "adapter/adapter.json").read_text())["parameters"]["stored"]
    assert counted == sum(v.numel() for v in stored.values())
    trained = Session(cfg)
    trained.method.load_training_state(
        torch.load(run_dir / "checkpoints/last.pt", weights_only=False)["method"]
    )
    (tmp_path / "saved").mkdir()
    trained.method.save(tmp_path / "saved")
    again = load_file(tmp_path / "saved" / weights)
    assert all(torch.equal(again[k], stored[k]) for k in shapes), "the adapter is not the trained state"
    # Loaded into a fresh model, the stored adapter computes what the trained state computes ...
    loaded = Session(cfg)
    loaded.method.load(run_dir / "adapter")
    batch = trained.format.training_batch([Pair(i.source, i.references[0]) for i in instances])
    logits = []
    for session in (trained, loaded):
        session.method.set_training(False)
        with torch.no_grad(), session.method.active(2):
            logits.append(session.model(**batch["inputs"]).logits)
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    # ... and decodes, each source alone, to the stored predictions.
    alone = [
        generate(loaded.model, loaded.method, loaded.format, [i.source], cfg.decode, loaded.device)[0]
        for i in instances
    ]
    assert alone == outputs


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        ("tiny-bart", PrefixOptions(variant="infix"), "defined for decoder-only models"),
        (
            "tiny-gpt2",
            PrefixOptions(variant="infix", init_phrase="table-to-text:"),
            "does not apply to an infix",
        ),
        ("tiny-gpt2", PrefixOptions(variant="infix", position_offset=True), "GPT-2 prefixes only"),
        ("tiny-bart", PrefixOptions(position_offset=True), "GPT-2 prefixes only"),
        ("tiny-gpt2", PromptOptions(prompt_len=300), "too little of the model's 512 positions"),
        ("tiny-gpt2", PTuningOptions(encoder_hidden=33), "must be even"),
    ],
)
def test_options_a_model_cannot_take_are_refused_in_one_line(model, options, message):
    arch = models.arch_summary(models.hf_config(model))
    with pytest.raises(PeftrunError, match=message) as err:
        options.check(arch)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: {kind: prompt, prompt_len: 0}", "method.prompt_len"),
        ("method: {kind: ptuning, lstm_layers: 0}", "method.lstm_layers"),
        ("method: {kind: icl, k: -1}", "method.k"),
        ("method: {kind: prefix, variant: middle}", "method.variant"),
        ("method: {kind: prefix, init_phrase: '  '}", "method.init_phrase"),
        ("method: {kind: prompt, init: zeros}", "method.init"),
    ],
)
def test_bad_new_method_options_are_config_errors(tmp_path, text, message):
    from peftrun import config

    with pytest.raises(PeftrunError, match=message) as err:
        config.load(write_config(tmp_path, text))
    assert "\n" not in str(err.value)


def test_phrase_length_and_prefix_len_must_agree():
    options = PrefixOptions(init_phrase="table-to-text:", prefix_len=3)
    with pytest.raises(PeftrunError, match="is 8 tokens and the prefix takes its length"):
        attach(models.load("tiny-gpt2", seed=0), options)


def test_icl_skips_a_demonstration_too_long_but_keeps_later_ones_that_fit():
    from peftrun.data.examples import Pair

    _, method, fmt = icl("tiny-bart", k=2, max_source=60)
    method._demonstrations = [Pair("word " * 200, "long"), Pair("short", "s")]
    ids = fmt.prompt_ids("name : Aromi")
    assert ids[
        1 : 1 + len(fmt.base.demonstration_ids(method._demonstrations[1]))
    ] == fmt.base.demonstration_ids(method._demonstrations[1])
    assert method.take_notes() == ["icl: demonstrations per input (k=2, fewer if too long): 1 for 1 inputs"]


def test_phrase_init_fit_leaves_no_gradients_for_training():
    method = attach(
        models.load("tiny-gpt2", seed=0),
        PrefixOptions(init_phrase="table-to-text:", mlp_hidden=32, init_steps=5),
    )
    method.initialize([])
    assert all(p.grad is None for p in method.trainable_parameters())


def test_phrase_init_also_applies_when_nothing_trains(tmp_path):
    run_dir, _ = run(
        tmp_path,
        "tiny-gpt2",
        "{kind: prefix, init_phrase: 'table-to-text:', mlp_hidden: 32, init_steps: 5}",
        0,
    )
    assert (
        "MSE to the phrase's activations"
        in json.loads((run_dir / "meta.json").read_text())["method_notes"][0]
    )
