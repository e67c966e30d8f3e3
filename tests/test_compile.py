"""`train.compile`: the compiled training step is the eager one (float64, to ~1e-6), its
checkpoints and adapters carry the eager key names so a run resumes across the setting, a method
that cannot compile is refused in one line, and configs without the key are unchanged."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import write_config
from safetensors.torch import load_file
from torch._dynamo.utils import counters

from peftrun import compiled, config, experiment
from peftrun.assembly import attach_method, load_base
from peftrun.distributed import Processes
from peftrun.errors import PeftrunError
from peftrun.train import Trainee, step_together

PREFIX = {"kind": "prefix", "prefix_len": 3}


def _trained(
    compiled: bool, steps: int = 4, method: dict | None = None
) -> tuple[list[float], dict[str, torch.Tensor]]:
    """A tiny GPT-2 method (default: a prefix, through transformers' attention interface) trained
    `steps` updates in float64 on batches of different lengths: its losses and final state."""
    cfg = config.build(
        {
            "model": {"name": "tiny-gpt2"},
            "data": {"dataset": "e2e", "train_size": 16},
            "method": method or PREFIX,
            "train": {"precision": "fp64", "batch_size": 4, "lr": 1e-2, "device": "cpu", "compile": compiled},
        }
    )
    from peftrun import data

    pairs = list(data.load_pairs(cfg.data, "train"))
    loaded = load_base(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    method, fmt = attach_method(loaded, cfg)
    trainee = Trainee(
        loaded.model, method, pairs, [], fmt.training_batch, cfg.train, None, torch.device("cpu"), Processes()
    )
    method.set_training(True)
    losses = []
    for k in range(steps):
        (value,) = step_together([(trainee, pairs[4 * k : 4 * k + 4])])
        trainee.optimizer.step()
        trainee.optimizer.zero_grad(set_to_none=True)
        losses.append(value)
    return losses, method.training_state()


def test_a_lora_step_compiles_whole_and_equals_eager(monkeypatch):
    """A LoRA whose rows all use it takes the dense path: no graph break (the gate's row selection
    would break the graph in every adapted layer). aot_eager: the graph, not the kernels (quick)."""
    monkeypatch.setattr(compiled, "COMPILE_BACKEND", "aot_eager")
    lora = {"kind": "lora", "rank": 2}
    torch._dynamo.reset()
    counters.clear()
    compiled_losses, compiled_state = _trained(compiled=True, method=lora)
    assert counters["stats"]["unique_graphs"] <= 2 and not counters["graph_break"]
    eager_losses, eager_state = _trained(compiled=False, method=lora)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-9, abs=1e-9)
    for key in eager_state:
        torch.testing.assert_close(compiled_state[key], eager_state[key], rtol=1e-9, atol=1e-12)


def test_the_compiled_step_is_the_eager_one_in_float64():
    torch._dynamo.reset()
    counters.clear()
    compiled_losses, compiled_state = _trained(compiled=True)
    assert counters["stats"]["unique_graphs"] <= 2  # static, then dynamic: no recompile per length
    assert not counters["graph_break"]
    eager_losses, eager_state = _trained(compiled=False)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-9, abs=1e-9)
    assert compiled_state.keys() == eager_state.keys()
    for key in eager_state:
        torch.testing.assert_close(compiled_state[key], eager_state[key], rtol=1e-6, atol=1e-8)


TINY = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 24, dev_loss_size: 4}
method: {kind: prefix, prefix_len: 3}
train: {lr: 1e-3, epochs: 1, batch_size: 6, checkpoint_every: 1, eval_every: 2, log_every: 1, COMPILE}
decode: {splits: [dev], limit: 2, num_beams: 1, max_new_tokens: 4, batch_size: 2}
"""


class Killed(Exception):
    pass


def _killed_at_2(step):
    if step == 2:
        raise Killed


def _run(tmp_path, name: str, compiled: bool, then: bool | None = None):
    """A run (compiled or not); with `then`, killed after update 2 and resumed with compile=`then`."""
    cfg = write_config(tmp_path, TINY.replace("COMPILE", f"compile: {str(compiled).lower()}"), f"{name}.yaml")
    if then is None:
        run_dir, _ = experiment.train(cfg, [], str(tmp_path / name))
        return run_dir, None
    with pytest.raises(Killed):
        experiment.train(cfg, [], str(tmp_path / name), on_update=_killed_at_2)
    checkpoint = torch.load(tmp_path / name / "checkpoints/last.pt", weights_only=False)
    run_dir, _ = experiment.train(
        cfg, [f"train.compile={str(then).lower()}"], str(tmp_path / name), resume_from_last_good=True
    )
    return run_dir, checkpoint


def test_checkpoints_and_adapters_resume_across_compile(tmp_path, monkeypatch):
    monkeypatch.setattr(compiled, "COMPILE_BACKEND", "aot_eager")  # the keys, not the kernels: quick
    torch._dynamo.reset()
    eager, _ = _run(tmp_path, "eager", compiled=False)
    to_eager, compiled_checkpoint = _run(tmp_path, "compiled-then-eager", compiled=True, then=False)
    to_compiled, eager_checkpoint = _run(tmp_path, "eager-then-compiled", compiled=False, then=True)
    assert compiled_checkpoint["method"].keys() == eager_checkpoint["method"].keys()
    assert not any("_orig_mod" in key for key in compiled_checkpoint["method"])
    expected = load_file(eager / "adapter/prefix.safetensors")
    for run_dir in (to_eager, to_compiled):
        adapter = load_file(run_dir / "adapter/prefix.safetensors")
        assert adapter.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(adapter[key], expected[key], rtol=1e-5, atol=1e-6)


def test_a_method_that_cannot_compile_is_refused_in_one_line(tmp_path, monkeypatch):
    from peftrun import validation

    monkeypatch.setattr(compiled, "COMPILE_BACKEND", "aot_eager")  # (were it not refused)
    # Every method compiles today; the refusal is checked on a method declared as not compiling.
    monkeypatch.setitem(validation.NOT_COMPILED, "lora", "a planted reason")
    cfg = write_config(
        tmp_path,
        TINY.replace("method: {kind: prefix, prefix_len: 3}", "method: {kind: lora}").replace(
            "COMPILE", "compile: true"
        ),
    )
    with pytest.raises(PeftrunError) as refused:
        experiment.train(cfg, [], str(tmp_path / "run"))
    message = str(refused.value)
    assert "\n" not in message and "train.compile" in message and "lora" in message
    assert not (tmp_path / "run").exists()


def test_compile_off_is_left_out_of_the_resolved_config_and_on_is_written(tmp_path):
    base = yaml.safe_load(TINY.replace(", COMPILE", ""))
    plain = config.build(base)
    off = config.build({**base, "train": {**base["train"], "compile": False}})
    on = config.build({**base, "train": {**base["train"], "compile": True}})
    assert "compile" not in plain.to_yaml()
    assert off.to_yaml() == plain.to_yaml() and off.short_hash() == plain.short_hash()
    assert "compile: true" in on.to_yaml() and on.short_hash() != plain.short_hash()
