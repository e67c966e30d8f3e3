"""Runs packed on one frozen base (peftrun.packing, `peftrun sweep --pack`) train as they would
alone: each packed run ends with the same adapter, the same loss curve and the same predictions
as the same run trained alone, for prefixes of different lengths, a prompt, P-tuning and LoRAs of
different ranks, with different data subsets, seeds, learning rates, batch sizes, gradient
accumulation and loss reductions, on GPT-2 and BART. A run that diverges stops alone; a crashed
or interrupted pack resumes to the same files; running out of memory or being stopped while
finishing leaves every run resumable.

Exactness is the claim, so these runs train in float64 (`train.precision: fp64`): packed and
alone differ only in summation order (other rows in the batch, other padded lengths), which moves
a float64 result by ~1e-16 relative per operation; a few hundred operations deep and through
AdamW's normalisation that stays below 1e-12, so 1e-9 holds on any machine and thread count,
while any difference in what is computed (a loss reduction, a divisor, a row seeing another
run's prefix) moves results by far more than 1e-9."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, write_config
from safetensors.torch import load_file
from typer.testing import CliRunner

from peftrun import experiment, interrupts, packing
from peftrun import train as train_module
from peftrun.cli import app
from peftrun.errors import PeftrunError
from peftrun.runs import Run

GPT2 = """
model: {name: tiny-gpt2, seed: 0}
data: {dataset: e2e, train_size: 16, dev_loss_size: 6}
method: {kind: prefix, prefix_len: 3, mlp_hidden: 16}
train: {lr: 1e-2, epochs: 2, batch_size: 4, log_every: 1, eval_every: 3, precision: fp64}
decode: {splits: [dev], limit: 4, max_new_tokens: 6, min_length: 100, batch_size: 4}
"""

BART = f"""
model: {{name: tiny-bart, seed: 0}}
data:
  dataset: xsum
  files: {{train: {ROOT}/data/xsum-synthetic/train.jsonl, dev: {ROOT}/data/xsum-synthetic/dev.jsonl}}
  train_size: 12
  dev_loss_size: 4
  max_source_tokens: 64
  max_target_tokens: 16
method: {{kind: prefix, prefix_len: 3, mlp_hidden: 16}}
train: {{lr: 1e-2, epochs: 2, batch_size: 4, log_every: 1, loss_reduction: token_mean, precision: fp64}}
decode: {{splits: [dev], limit: 4, max_new_tokens: 6, min_length: 100, batch_size: 4, num_beams: 2}}
"""

TOLERANCE = 1e-9  # float64: see the module docstring

# The first run's loss reduction and grad_accum differ from some later runs': a pack that applied
# the first run's settings to every run would train those differently.
GPT2_RUNS = [
    ["train.seed=1", "data.subset_seed=0", "train.loss_reduction=sequence_sum"],
    ["method.prefix_len=5", "train.lr=2e-2", "train.seed=2", "data.subset_seed=1", "train.batch_size=3"]
    + ["train.grad_accum=2", "train.loss_reduction=token_mean"],
    ["method={kind: prompt, prompt_len: 4}", "train.lr=3e-2", "train.seed=3"],
    ["method={kind: ptuning, prompt_len: 3}", "train.seed=6", "data.subset_seed=3"],
    ["method={kind: lora, rank: 2}", "train.lr=5e-3", "train.seed=4", "data.subset_seed=2"],
    ["method={kind: lora, rank: 4, targets: [q, v]}", "train.seed=5", "train.batch_size=5"]
    + ["train.loss_reduction=sequence_sum"],
]
LLAMA = GPT2.replace("tiny-gpt2", "tiny-llama")  # GQA prefixes with rotary positions shifted per run
LLAMA_RUNS = [*GPT2_RUNS[:2], GPT2_RUNS[3], ["method={kind: lora, rank: 2, targets: [all-linear]}"]]
BART_RUNS = [
    ["train.seed=1"],
    ["method.prefix_len=2", "train.lr=2e-2", "train.seed=2", "data.subset_seed=1"]
    + ["train.loss_reduction=sequence_sum", "train.grad_accum=2"],
    ["method={kind: lora, rank: 2}", "train.lr=1e-1", "train.seed=101", "train.batch_size=3"],
]


def adapter_tensors(run: Path) -> dict:
    out = {}
    for file in sorted((run / "adapter").glob("*.safetensors")):
        out.update({f"{file.name}:{k}": v for k, v in load_file(str(file)).items()})
    return out


def log_values(run: Path) -> list[tuple]:
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [
        (r["step"], "loss" if "loss" in r else "dev_loss", r.get("loss", r.get("dev_loss"))) for r in records
    ]


def final_files(run: Path) -> dict[str, bytes]:
    keep = ("adapter", "predictions", "metrics")
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.relative_to(run).parts[0] in keep
    }


def train_alone_and_packed(tmp_path: Path, text: str, runs: list[list[str]]):
    config = write_config(tmp_path, text)
    alone = [experiment.train(config, o, str(tmp_path / f"alone{k}"))[0] for k, o in enumerate(runs)]
    members = [packing.Member(config, o, str(tmp_path / f"packed{k}")) for k, o in enumerate(runs)]
    outcomes = packing.train_pack(members)
    assert [o.state for o in outcomes] == ["done"] * len(runs)
    return alone, [o.run_dir for o in outcomes]


def assert_same_training(one: Path, other: Path) -> str:
    """Same adapter and loss curve within TOLERANCE, same predictions (returned)."""
    a, b = adapter_tensors(one), adapter_tensors(other)
    assert a and set(a) == set(b)
    for key in a:
        assert a[key].dtype == torch.float64
        assert (a[key] - b[key]).abs().max().item() < TOLERANCE, (one.name, key)
    curve, other_curve = log_values(one), log_values(other)
    assert [c[:2] for c in curve] == [c[:2] for c in other_curve]
    for (_, _, x), (_, _, y) in zip(curve, other_curve, strict=True):
        assert x == pytest.approx(y, abs=TOLERANCE, rel=0)
    outputs = (one / "predictions" / "dev.txt").read_text()
    assert outputs == (other / "predictions" / "dev.txt").read_text(), one.name
    return outputs


@pytest.mark.parametrize(
    ("text", "runs"),
    [(GPT2, GPT2_RUNS), (LLAMA, LLAMA_RUNS), (BART, BART_RUNS)],
    ids=["tiny-gpt2", "tiny-llama", "tiny-bart"],
)
def test_each_packed_run_equals_the_same_run_alone(tmp_path, text, runs):
    alone, packed = train_alone_and_packed(tmp_path, text, runs)
    for one, many in zip(alone, packed, strict=True):
        outputs = assert_same_training(one, many)
        # "Same predictions" proves something only if there are words to compare.
        assert all(line.strip() for line in outputs.splitlines()), (one.name, outputs)
        meta_alone, meta = (
            json.loads((one / "meta.json").read_text()),
            json.loads((many / "meta.json").read_text()),
        )
        assert meta["packed_with"] == [p.name for p in packed] and "packed_with" not in meta_alone
        assert meta["parameters"] == meta_alone["parameters"]  # the other runs' LoRAs are not "base"
        assert meta["status"] == "done" and meta["updates"] == meta_alone["updates"]


def nan_for(monkeypatch, run_name: str, at_call: int):
    """The run `run_name`'s loss becomes NaN at its `at_call`-th micro-batch."""
    real = train_module.Trainee.account
    calls = {"n": 0}

    def account(self, numerator, denominator, tokens):
        if self.run.path.name == run_name and numerator is not None and numerator.requires_grad:
            calls["n"] += 1
            if calls["n"] == at_call:
                numerator = numerator * float("nan")
        return real(self, numerator, denominator, tokens)

    monkeypatch.setattr(train_module.Trainee, "account", account)


def test_a_run_that_diverges_stops_alone(tmp_path, monkeypatch):
    config = write_config(tmp_path, GPT2.replace("epochs: 2", "epochs: 1") + "\n")
    nan_for(monkeypatch, "bad", 3)
    members = [
        packing.Member(config, ["train.checkpoint_every=1"], str(tmp_path / "bad")),
        packing.Member(config, ["method={kind: lora, rank: 2}"], str(tmp_path / "good")),
    ]
    outcomes = packing.train_pack(members)
    assert [o.state for o in outcomes] == ["failed", "done"]
    assert "training diverged: the loss is nan at update 3" in outcomes[0].error
    bad, good = Run(tmp_path / "bad"), Run(tmp_path / "good")
    assert bad.status() == "failed" and bad.checkpoint_step() == 2 and not bad.in_use
    assert good.done and (tmp_path / "good" / "predictions" / "dev.txt").is_file()
    monkeypatch.undo()
    alone, _ = experiment.train(config, ["method={kind: lora, rank: 2}"], str(tmp_path / "alone"))
    assert_same_training(alone, tmp_path / "good")  # the NaN next door changed nothing


PAIR = [
    ["train.grad_accum=2", "train.checkpoint_every=1"],
    ["method={kind: lora, rank: 2}", "train.batch_size=3", "train.checkpoint_every=1"],
]
# A resumed pack equals the uninterrupted one up to floating-point summation order, not byte for
# byte: after the resume, the runs' rows share batches at other moments (each run resumes from its
# own last update), so the padded shapes, and with them the summation order, differ.


def stopped_on_the_way(tmp_path, monkeypatch, name: str, at_call: int, stop, expected) -> tuple:
    """A reference pack, and the same pack stopped by `stop()` at its `at_call`-th packed step."""
    config = write_config(tmp_path, GPT2)
    reference = packing.train_pack(
        [packing.Member(config, o, str(tmp_path / f"ref{k}")) for k, o in enumerate(PAIR)]
    )
    members = [packing.Member(config, o, str(tmp_path / f"{name}{k}")) for k, o in enumerate(PAIR)]
    real, calls = train_module.step_together, {"n": 0}

    def stopping(*args):
        calls["n"] += 1
        if calls["n"] == at_call:
            stop()
        return real(*args)

    monkeypatch.setattr(train_module, "step_together", stopping)
    with pytest.raises(expected):
        packing.train_pack(members)
    monkeypatch.undo()
    return reference, members


def test_a_crashed_pack_resumes_to_the_same_files(tmp_path, monkeypatch):
    def crash():
        raise RuntimeError("simulated crash")

    # At the 6th packed step both runs have checkpoints (checkpoint_every: 1).
    reference, members = stopped_on_the_way(tmp_path, monkeypatch, "crash", 6, crash, RuntimeError)
    for k in range(2):
        run = Run(tmp_path / f"crash{k}")
        assert run.status() == "failed" and run.has_checkpoint and not run.in_use
    assert [o.state for o in packing.train_pack(members)] == ["done", "done"]
    for k, ref in enumerate(reference):
        assert_same_training(ref.run_dir, tmp_path / f"crash{k}")
        steps = [s for s, kind, _ in log_values(tmp_path / f"crash{k}") if kind == "loss"]
        assert steps == sorted(set(steps))  # nothing logged twice after the resume


def test_a_signal_stops_every_run_at_an_update_boundary_and_they_resume(tmp_path, monkeypatch):
    def signal():
        monkeypatch.setattr(interrupts, "_requested", 15)

    # The 3rd packed step is mid-accumulation of the grad_accum=2 run: it finishes its update first.
    reference, members = stopped_on_the_way(tmp_path, monkeypatch, "stop", 3, signal, interrupts.Interrupted)
    for k in range(2):
        run = Run(tmp_path / f"stop{k}")
        assert run.status() == "incomplete" and run.has_checkpoint and not run.in_use
    assert [o.state for o in packing.train_pack(members)] == ["done", "done"]
    for k, ref in enumerate(reference):
        assert_same_training(ref.run_dir, tmp_path / f"stop{k}")


def test_sweep_pack_packs_compatible_runs_and_runs_the_rest_alone(tmp_path):
    write_config(tmp_path, GPT2.replace("epochs: 2", "epochs: 1"), "base.yaml")
    sweep = write_config(
        tmp_path,
        """
base: base.yaml
cases:
  - {method: {kind: prefix, prefix_len: 3, mlp_hidden: 16}, data.subset_seed: 0}
  - {method: {kind: prefix, prefix_len: 3, mlp_hidden: 16}, data.subset_seed: 1}
  - {method: {kind: lora, rank: 2}, data.subset_seed: 0}
  - {method: {kind: lora, rank: 2}, data.subset_seed: 1}
  - {method: {kind: bitfit}, data.subset_seed: 0}
seeds: [1]
name: packed
""",
        "sweep.yaml",
    )
    runner = CliRunner()
    common = ["sweep", str(sweep), "--root", str(tmp_path / "runs"), "--json", "--workers", "2"]
    planned = json.loads(runner.invoke(app, [*common, "--pack", "3", "--dry-run"]).stdout)
    packs = {tuple(r.get("packed_with", [])) for r in planned["runs"]}
    alone = [r["name"] for r in planned["runs"] if "packed_with" not in r]
    # BitFit changes the base: alone; 4 packable runs in packs of up to 3: one pack, one left alone.
    assert sorted(name.split("-")[0] for name in alone) == ["kind=bitfit", "kind=lora"]
    assert [len(p) for p in packs if p] == [3]
    common += ["--pack", "4"]
    result = runner.invoke(app, common)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"done": 5}
    manifest = json.loads((tmp_path / "runs" / "packed" / "sweep.json").read_text())
    packed = [p for p in manifest["points"] if "packed_with" in p]
    assert len(packed) == 4 and all(p["state"] == "done" for p in manifest["points"])
    assert (tmp_path / "runs" / "packed" / "packs").is_dir()
    for point in packed:
        meta = json.loads((Path(point["run_dir"]) / "meta.json").read_text())
        assert meta["packed_with"] == point["packed_with"]
    again = json.loads(runner.invoke(app, common).stdout)
    assert again["counts"] == {"skipped": 5}


def test_what_cannot_be_packed_is_one_line(tmp_path):
    config = write_config(tmp_path, GPT2)
    with pytest.raises(PeftrunError, match="cannot be packed: method 'full'"):
        packing.train_pack([packing.Member(config, ["method={kind: full}"], str(tmp_path / "a"))])
    with pytest.raises(PeftrunError, match="need the same base model"):
        packing.train_pack(
            [
                packing.Member(config, [], str(tmp_path / "a")),
                packing.Member(config, ["model.seed=1"], str(tmp_path / "b")),
            ]
        )
    with pytest.raises(PeftrunError, match="cannot be packed: method 'lora'.*dropout"):
        packing.train_pack(
            [packing.Member(config, ["method={kind: lora, dropout: 0.1}"], str(tmp_path / "a"))]
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing half-made
    bad = tmp_path / "pack.json"
    bad.write_text('{"runs": [{"config": "cfg.yaml", "run_dir": "x", "seed": 1}]}')
    result = CliRunner().invoke(app, ["train-packed", str(bad)])
    assert result.exit_code == 2 and "unknown keys ['seed']" in result.output
    result = CliRunner().invoke(app, ["train-packed", str(tmp_path / "missing.json")])
    assert result.exit_code == 2 and "not found" in result.output and "Traceback" not in result.output


def reference_pair(tmp_path) -> tuple[Path, list]:
    """The config, and the PAIR trained packed without a stop (its run directories)."""
    config = write_config(tmp_path, GPT2)
    reference = packing.train_pack(
        [packing.Member(config, o, str(tmp_path / f"ref{k}")) for k, o in enumerate(PAIR)]
    )
    return config, [r.run_dir for r in reference]


def test_out_of_memory_on_a_packed_step_is_one_line_and_every_run_resumes(tmp_path, monkeypatch):
    config, reference = reference_pair(tmp_path)
    real, calls = train_module.forward_losses, {"n": 0}

    def forward_losses(model, parts, autocast, forward=None):
        if len(parts) > 1:  # a packed training step (a dev loss is one run's)
            calls["n"] += 1
            if calls["n"] == 4:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, parts, autocast, forward)

    monkeypatch.setattr(train_module, "forward_losses", forward_losses)
    members = [packing.Member(config, o, str(tmp_path / f"oom{k}")) for k, o in enumerate(PAIR)]
    with pytest.raises(PeftrunError) as failed:
        packing.train_pack(members)
    # One line: how big the packed batch was (each run's rows), and what to lower.
    assert str(failed.value).startswith("out of GPU memory on a packed batch of 7 rows (oom0 4, oom1 3)")
    assert "pack fewer runs" in str(failed.value) and "\n" not in str(failed.value)
    for k in range(2):
        run = Run(tmp_path / f"oom{k}")
        assert run.status() == "failed" and run.has_checkpoint and not run.in_use
        assert "out of GPU memory" in run.meta()["error"]
    monkeypatch.undo()
    assert [o.state for o in packing.train_pack(members)] == ["done", "done"]
    for k, ref in enumerate(reference):
        assert_same_training(ref, tmp_path / f"oom{k}")


def test_a_pack_stopped_while_finishing_resumes_each_run_where_it_was(tmp_path, monkeypatch):
    """A signal while the first run decodes: that run and every run not finished yet are
    recorded as interrupted and unlocked (none failed, none DONE); re-running finishes them with
    what the uninterrupted pack made, without training again."""
    from peftrun.session import Session

    config, reference = reference_pair(tmp_path)
    real = Session.decode_and_score

    def decode_and_score(self, run, splits):
        if run.path.name == "fin0":
            raise interrupts.Interrupted(15, "while decoding")
        return real(self, run, splits)

    monkeypatch.setattr(Session, "decode_and_score", decode_and_score)
    members = [packing.Member(config, o, str(tmp_path / f"fin{k}")) for k, o in enumerate(PAIR)]
    with pytest.raises(interrupts.Interrupted) as stopped:
        packing.train_pack(members)
    assert stopped.value.run_dir == tmp_path / "fin0"
    for k in range(2):
        run = Run(tmp_path / f"fin{k}")
        assert run.status() == "incomplete" and run.meta()["status"] == "interrupted"
        assert run.has_checkpoint and not run.in_use and not run.done
    monkeypatch.undo()
    assert [o.state for o in packing.train_pack(members)] == ["done", "done"]
    for k, ref in enumerate(reference):
        assert_same_training(ref, tmp_path / f"fin{k}")
        updates = [s for s, kind, _ in log_values(tmp_path / f"fin{k}") if kind == "loss"]
        assert updates == sorted(set(updates))  # the re-run trained nothing again
