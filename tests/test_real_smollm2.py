"""peftrun on a real pretrained base, SmolLM2-135M (issue 18 part 3): what random weights cannot
show. A prefix trained for a few steps steers the frozen model (held-out loss falls far below the
frozen model's); a prefix set to a phrase's own keys/values is the phrase read as text; exported
adapters give peft's logits; a mixed batch is each row alone. All through peftrun's own APIs
(the methods registry's `attach`, `experiment.train`, `serving.peft_export.export`).

Under CI the wheel must be there."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import require, write_config

from peftrun import models

NAME = "smollm2-135m"
SOURCES = (
    "name : The Eagle | Type : coffee shop | food : Japanese | price : less than £ 20",
    "name : Cocum | Type : coffee shop | food : Chinese | customer rating : 3 out of 5",
    "name : Aromi | area : riverside",
)


def load(dtype=torch.float64):
    """SmolLM2 by its built-in name (PEFTRUN_CACHE: the session's conversion), in `dtype`
    (float64 where exactness is the claim)."""
    loaded = models.load(NAME)
    loaded.model.to(dtype).eval()
    return loaded


def ids(loaded, text: str) -> list[int]:
    return loaded.tokenizer(text, add_special_tokens=False).input_ids


def test_phrase_initialised_prefix_equals_the_phrase_read_as_text(smollm2_env):
    """Li & Liang Sec. 7: a prefix set to the frozen model's keys/values of a real phrase is that
    phrase as context. With rotary positions the cached keys are already rotated for positions
    0..L-1, so real tokens must be numbered from L: a missing shift, a missing layer, a mask
    without the prefix columns or wrong key/value heads all break the equality."""
    from peftrun.methods.base import attach
    from peftrun.methods.prefix_options import PrefixOptions, phrase_ids

    loaded = load()
    method = attach(loaded, PrefixOptions(init_phrase="table-to-text:", reparametrize=False))
    method.initialize()
    method.set_training(False)
    phrase = phrase_ids(loaded.tokenizer, "table-to-text:")
    assert method.length == len(phrase)
    worst = 0.0
    with torch.no_grad():
        for source in SOURCES:
            x = torch.tensor([ids(loaded, " " + source)])
            with method.active(1):
                got = loaded.model(x, attention_mask=torch.ones_like(x)).logits
            want = loaded.model(torch.cat([torch.tensor([phrase]), x], dim=1)).logits[:, len(phrase) :]
            worst = max(worst, (got - want).abs().max().item())
            plain = loaded.model(x).logits  # the prefix inactive again: the frozen model
            assert (plain - want).abs().max().item() > 1e-1  # the phrase really changes the logits
    print(f"phrase-initialised prefix vs the phrase as text: max |Δlogit| {worst:.2e} (float64)")
    assert worst < 1e-8  # the fp32 bound is 5e-5; float64 is exact to rounding


def test_mixed_batch_of_prefixes_equals_each_row_alone(smollm2_env):
    """Three rows, each its own real prefix (other phrases' keys/values) and its own length
    (right-padded): served together, each row's logits are its logits alone."""
    from peftrun.methods.base import attach
    from peftrun.methods.inject.rows import RowInputs, active_rows
    from peftrun.methods.prefix_options import PrefixOptions

    loaded = load()
    method = attach(loaded, PrefixOptions(prefix_len=4, reparametrize=False))
    method.set_training(False)
    phrases = ["table to text", "describe the place", "a short review"]
    with torch.no_grad():
        kv = []
        for phrase in phrases:
            cache = loaded.model(torch.tensor([ids(loaded, phrase)[:4]]), use_cache=True).past_key_values
            kv.append(torch.stack([torch.stack([c.keys[0], c.values[0]]) for c in cache.layers]))
        rows = [ids(loaded, " " + source) for source in SOURCES]
        width = max(map(len, rows))
        batch = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
        with active_rows(
            loaded.model, [RowInputs({"self": kv[r]}, method.position_offset) for r in range(3)]
        ):
            mixed = loaded.model(batch, attention_mask=mask).logits
        worst, spread = 0.0, 0.0
        for r, row in enumerate(rows):
            with active_rows(loaded.model, [RowInputs({"self": kv[r]}, method.position_offset)]):
                alone = loaded.model(torch.tensor([row])).logits[0]
            worst = max(worst, (mixed[r, : len(row)] - alone).abs().max().item())
            with active_rows(loaded.model, [RowInputs({"self": kv[(r + 1) % 3]}, method.position_offset)]):
                other = loaded.model(torch.tensor([row])).logits[0]
            spread = max(spread, (other - alone).abs().max().item())
    print(f"mixed vs alone: max |Δlogit| {worst:.2e}; another row's prefix changes it by {spread:.2f}")
    assert worst < 1e-8
    assert spread > 1e-1  # the rows' prefixes differ in effect: mixing them up would be seen


CONFIG = """
model: {name: smollm2-135m}
data: {dataset: e2e, train_size: TRAIN, dev_loss_size: DEV, max_target_tokens: 32}
method: METHOD
train: {lr: LR, max_steps: STEPS, batch_size: BATCH, eval_every: STEPS, loss_reduction: token_mean, seed: 1}
decode: {splits: []}
"""


def train(tmp_path, method: str, steps: int = 1, batch: int = 2, lr: float = 1e-2, dev: int = 2):
    from peftrun import experiment

    text = CONFIG.replace("METHOD", method).replace("STEPS", str(steps)).replace("BATCH", str(batch))
    text = text.replace("TRAIN", str(steps * batch)).replace("DEV", str(dev)).replace("LR", str(lr))
    folder = tmp_path / method.split(",")[0].split()[-1]
    folder.mkdir()
    run_dir, _ = experiment.train(write_config(folder, text), [], str(folder / "run"))
    return run_dir


def session_of(run_dir):
    """A fresh Session holding the run's stored adapter (what `peftrun decode` would use)."""
    from peftrun.experiment import Session
    from peftrun.scoring import open_run

    run, cfg = open_run(run_dir)
    session = Session(cfg)
    session.method.load(run.adapter_dir)
    session.method.set_training(False)
    return session, cfg


@pytest.mark.parametrize(
    "method",
    [
        "{kind: prefix, prefix_len: 3, mlp_hidden: 16}",
        "{kind: lora, rank: 2, alpha: 4, targets: [q, k, v, o]}",
    ],
    ids=["prefix", "lora"],
)
def test_exported_adapter_gives_peft_the_same_logits(smollm2_env, tmp_path, method):
    """peft sizes a Llama prefix by its key/value heads and LoRA k/v by their 192-wide outputs;
    the export's base is the converted folder, which peft loads as a plain model."""
    from peftrun.serving.peft_export import export

    try:
        import peft
    except ImportError:
        peft = require(False, "peft is not installed (pip install -e '.[dev]')")
    run_dir = train(tmp_path, method)
    session, _ = session_of(run_dir)
    x = torch.tensor([ids(session.loaded, " " + SOURCES[0])])
    with torch.no_grad(), session.method.active(1):
        ours = session.model(x, attention_mask=torch.ones_like(x)).logits
    out = export(run_dir, tmp_path / "peft")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(smollm2_env.resolve())
    model = peft.AutoPeftModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = model(x).logits
        with model.disable_adapter():
            frozen_difference = (model(x).logits - ours).abs().max().item()
    difference = (theirs - ours).abs().max().item()
    print(f"{method}: ours vs peft max |Δlogit| {difference:.2e}; the adapter moves {frozen_difference:.2e}")
    assert difference < 1e-4  # fp32 through 30 layers (logits ~ 20)
    assert frozen_difference > 1e-3  # one step moved the logits: an export of nothing would be seen


def test_a_short_prefix_run_lowers_held_out_loss_far_below_the_frozen_models(smollm2_env, tmp_path):
    """Issue 18's probe: 30 steps of a 12-position prefix (138,240 values, 0.10%) took held-out E2E
    loss from 2.86 to 1.59. Here fewer steps on shorter targets; the bound is conservative. Both
    losses are computed here on the same held-out rows: the frozen model outside `active`."""
    from peftrun.train import sequence_losses

    run_dir = train(tmp_path, "{kind: prefix, prefix_len: 12, reparametrize: false}", **PROBE)
    session, cfg = session_of(run_dir)
    from peftrun import data

    held_out = data.load_pairs(cfg.data, "dev")[: PROBE["dev"]]
    batch = session.format.training_batch(held_out)
    with torch.no_grad():
        frozen_logits = session.model(**batch["inputs"]).logits
        with session.method.active(len(held_out)):
            tuned_logits = session.model(**batch["inputs"]).logits
    losses = {}
    for name, logits in (("frozen", frozen_logits), ("prefix", tuned_logits)):
        sums, counts = sequence_losses(logits, batch["labels"])
        losses[name] = (sums.sum() / counts.sum()).item()
    meta = json.loads((run_dir / "meta.json").read_text())
    print(f"held-out E2E loss ({PROBE}): frozen {losses['frozen']:.2f} -> prefix {losses['prefix']:.2f}")
    assert meta["best_dev_loss"] == pytest.approx(losses["prefix"], rel=1e-3)  # the trainer's number
    assert losses["frozen"] > 2.0  # the frozen model does not know E2E's style
    assert losses["prefix"] < losses["frozen"] - 0.5  # measured 1.28 lower; 12 steps at lr 5e-3: 0.25


PROBE = dict(steps=10, batch=4, lr=1e-1, dev=16)  # measured: held-out loss 3.48 -> 2.20
