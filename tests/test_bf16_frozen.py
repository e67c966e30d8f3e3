"""`train.precision: bf16-frozen` (docs/configs.md#config-reference): the frozen base's weights in
bf16, the trained parameters, their optimizer state and the loss in fp32; buffers (rotary
frequencies) stay fp32. Where the two meet the join casts (LoRA and adapters compute in their own
dtype, prefix keys/values and soft prompts take the base's), and gradients still reach the fp32
parameters.
Methods that train the base's own weights refuse it in one line.

Tolerance. bf16 keeps 8 significant bits: unit roundoff u = 2^-8. Every frozen weight and every
activation between layers is rounded once to bf16 (relative error <= u each), so the loss moves by
a small multiple of u relative to fp32's; we allow 2u (0.78%) of the fp32 loss at each step. The
losses here agree to ~3e-4 relative; a join that drops or corrupts the method's contribution
moves them by far more (a prefix or LoRA that stops learning keeps its first loss while fp32's
falls by 5-15%).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from peftrun import config
from peftrun.data.examples import Pair
from peftrun.decode import generate
from peftrun.distributed import Processes
from peftrun.errors import PeftrunError
from peftrun.session import Session
from peftrun.train import Trainee, forward_losses, step_together

PAIRS = [
    Pair("name : Aromi | area : city centre", "Aromi is a coffee shop in the city centre near the river."),
    Pair("name : Cocum | food : Chinese", "Cocum serves Chinese food."),
    Pair("name : The Punter", "The Punter."),
]
UNIT_ROUNDOFF = 2.0**-8  # bf16: 8 significant bits
METHODS = {
    "prefix": {"kind": "prefix", "prefix_len": 3},
    "lora": {"kind": "lora", "rank": 2, "targets": ["q", "v"]},
    "adapter": {"kind": "adapter", "bottleneck": 4},
    "prompt": {"kind": "prompt", "prompt_len": 3},
    "ptuning": {"kind": "ptuning", "prompt_len": 3},
    "embedding-only": {"kind": "prefix", "prefix_len": 3, "variant": "embedding-only"},
}


def session(model: str, method: dict, precision: str, lr: float = 2e-2) -> tuple[Session, Trainee]:
    cfg = config.build(
        {
            "model": {"name": model},
            "method": method,
            "train": {"precision": precision, "batch_size": len(PAIRS), "lr": lr, "device": "cpu"},
            "decode": {"num_beams": 1, "max_new_tokens": 6},
        }
    )
    s = Session(cfg)
    trainee = Trainee(
        s.model,
        s.method,
        PAIRS,
        [],
        s.format.training_batch,
        cfg.train,
        None,
        torch.device("cpu"),
        Processes(),
    )
    s.method.set_training(True)
    return s, trainee


def train_steps(trainee: Trainee, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        losses.append(step_together([(trainee, PAIRS)])[0])
        trainee.optimizer.step()
        trainee.optimizer.zero_grad(set_to_none=True)
    return losses


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_trained_parameters_and_optimizer_state_are_fp32_and_the_frozen_base_bf16(method):
    """Every trained parameter and its AdamW moments are fp32, starting from the same values as an
    fp32 run (drawn in fp32); every other parameter of the model is bf16; buffers stay fp32."""
    s, trainee = session("tiny-llama", METHODS[method], "bf16-frozen")
    _, reference = session("tiny-llama", METHODS[method], "fp32")
    for mine, theirs in zip(trainee.params, reference.params, strict=True):
        assert mine.dtype == torch.float32
        if method == "prompt":  # its rows start as the base's own embeddings: bf16's rounding of fp32's
            assert torch.allclose(mine, theirs, rtol=UNIT_ROUNDOFF, atol=0)
        else:
            assert torch.equal(mine, theirs)  # the same draws as fp32's
    train_steps(trainee, 1)
    trained = {id(p) for p in trainee.params}
    for p in trainee.params:
        state = trainee.optimizer.state[p]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    frozen = [(name, p.dtype) for name, p in s.model.named_parameters() if id(p) not in trained]
    assert frozen and all(dtype == torch.bfloat16 for _, dtype in frozen), frozen
    buffers = [(name, b.dtype) for name, b in s.model.named_buffers() if b.is_floating_point()]
    assert any("inv_freq" in name for name, _ in buffers)
    assert all(dtype == torch.float32 for _, dtype in buffers), buffers


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2", "tiny-bart"])
@pytest.mark.parametrize("method", ["prefix", "lora"])
def test_a_few_steps_give_fp32s_losses_within_bf16_tolerance(model, method):
    """4 updates of prefix and LoRA: each step's loss within 2u of fp32's (see the module
    docstring), and the loss falls as far as fp32's does, to within 10% of the fall (gradients reach
    the fp32 parameters through the joins' casts); the loss itself is fp32."""
    s, bf16 = session(model, METHODS[method], "bf16-frozen")
    _, fp32 = session(model, METHODS[method], "fp32")
    batch = bf16.batch(PAIRS)
    with torch.no_grad():
        ((numerator, _),) = forward_losses(s.model, [(s.method, batch, "token_mean")], bf16.autocast)
    assert numerator.dtype == torch.float32
    got, want = train_steps(bf16, 4), train_steps(fp32, 4)
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) <= 2 * UNIT_ROUNDOFF * w, (got, want)
    fall_got, fall_want = got[0] - got[-1], want[0] - want[-1]
    assert fall_want > 0.02 and abs(fall_got - fall_want) <= 0.1 * fall_want, (got, want)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2", "tiny-bart"])
@pytest.mark.parametrize("method", ["prefix", "lora"])
def test_the_adapter_saves_in_fp32_and_decodes_on_a_bf16_base(tmp_path, model, method):
    """The saved adapter is fp32 (as an fp32 run's); loaded into a fresh bf16-frozen base it gives
    the trained method's loss exactly, and decodes (`generate`) what the trained method does."""
    s, trainee = session(model, METHODS[method], "bf16-frozen")
    train_steps(trainee, 2)
    s.method.set_training(False)
    s.method.save(tmp_path)
    saved = load_file(str(next(tmp_path.glob("*.safetensors"))))
    assert saved and all(t.dtype == torch.float32 for t in saved.values())
    fresh, fresh_trainee = session(model, METHODS[method], "bf16-frozen")
    fresh.method.load(tmp_path)
    fresh.method.set_training(False)
    batch = trainee.batch(PAIRS)
    with torch.no_grad():
        ((trained, _),) = forward_losses(s.model, [(s.method, batch, "token_mean")], trainee.autocast)
        ((loaded, _),) = forward_losses(fresh.model, [(fresh.method, batch, "token_mean")], trainee.autocast)
    assert torch.equal(trained, loaded)
    sources = [p.source for p in PAIRS]
    outputs = generate(
        fresh.model, fresh.method, fresh.format, sources, fresh.cfg.decode, torch.device("cpu")
    )
    in_memory = generate(s.model, s.method, s.format, sources, s.cfg.decode, torch.device("cpu"))
    assert len(outputs) == len(PAIRS) and outputs == in_memory


@pytest.mark.parametrize("kind", ["full", "top-k", "bitfit", "feature-extraction"])
def test_methods_that_train_the_base_refuse_bf16_frozen_in_one_line(kind):
    """They train the base's own weights: no frozen base to keep in bf16
    (docs/configs.md#config-reference)."""
    method = {"kind": kind, "k": 1} if kind == "top-k" else {"kind": kind}
    with pytest.raises(PeftrunError) as refused:
        config.build({"method": method, "train": {"precision": "bf16-frozen"}})
    message = str(refused.value)
    assert "\n" not in message and f"method.kind={kind}" in message and "train.precision=bf16" in message


RUN = """
model: {name: tiny-llama}
data: {dataset: e2e, train_size: 24, dev_loss_size: 8}
method: {kind: lora, rank: 2}
train: {lr: 1e-2, epochs: 2, batch_size: 8, checkpoint_every: 2, precision: bf16-frozen, device: cpu}
decode: {splits: [dev], limit: 3, num_beams: 2, max_new_tokens: 6, batch_size: 3}
"""


class Killed(Exception):
    pass


def test_a_bf16_frozen_run_resumes_exactly_decodes_and_serves(tmp_path):
    """`peftrun train` end to end under bf16-frozen: a run killed after update 3 resumes from its
    checkpoint (fp32 parameters and optimizer state) to the uninterrupted run's adapter exactly;
    it decodes its dev rows, and `peftrun.load` serves the adapter on a bf16 base."""
    from conftest import write_config

    from peftrun import experiment, load

    cfg = write_config(tmp_path, RUN)
    straight, _ = experiment.train(cfg, [], str(tmp_path / "straight"))

    def kill(step):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        experiment.train(cfg, [], str(tmp_path / "killed"), on_update=kill)
    resumed, results = experiment.train(cfg, [], str(tmp_path / "killed"))
    assert results is not None
    a, b = load_file(straight / "adapter/lora.safetensors"), load_file(resumed / "adapter/lora.safetensors")
    assert a.keys() == b.keys() and all(a[k].dtype == torch.float32 for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert len((straight / "predictions/dev.txt").read_text().splitlines()) == 3
    served = load(str(straight), device="cpu")
    assert served.model.get_input_embeddings().weight.dtype == torch.bfloat16
    outputs = served.generate(["name[Aromi], area[city centre]", "name[Cocum], food[Chinese]"])
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)


@pytest.mark.parametrize("method", ["prefix", "lora"])
def test_runs_packed_on_one_bf16_base_each_start_as_alone_in_fp32(method):
    """Runs packed on one frozen base (peftrun.packing) attach one after another to a base already
    in bf16: each run's trained parameters are fp32 and start from the values it has alone, and
    attaching the second leaves the first's parameters as they were."""
    from peftrun.assembly import load_base

    def cfg(seed: int):
        train = {"precision": "bf16-frozen", "seed": seed, "device": "cpu"}
        return config.build({"model": {"name": "tiny-llama"}, "method": METHODS[method], "train": train})

    base = load_base(cfg(1))
    first = Session(cfg(1), base=base)
    before = [p.detach().clone() for p in first.method.trainable_parameters()]
    second = Session(cfg(2), base=base)
    alone = Session(cfg(2))
    for mine, theirs in zip(
        second.method.trainable_parameters(), alone.method.trainable_parameters(), strict=True
    ):
        assert mine.dtype == torch.float32 and torch.equal(mine, theirs)
    for kept, now in zip(before, first.method.trainable_parameters(), strict=True):
        assert now.dtype == torch.float32 and torch.equal(kept, now)
