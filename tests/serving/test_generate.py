"""`peftrun generate` and `peftrun.load` on real run directories: a mixed file gives, for every
adapter, exactly what `peftrun decode` of that run gives on the same sources; rows are batched
across adapters; what cannot share the base or a decoding set-up is grouped, and said so; bad
lines stop with their number after the lines before them are written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import write_config
from typer.testing import CliRunner

import peftrun
from peftrun import experiment, models
from peftrun.cli import app
from peftrun.errors import PeftrunError

CONFIG = """
model: {name: MODEL}
data: {dataset: e2e, train_size: 16, dev_loss_size: 4}
method: METHOD
train: {lr: 1e-2, epochs: 1, max_steps: 2, batch_size: 8, seed: 101, loss_reduction: token_mean}
decode: {splits: [dev], limit: 5, num_beams: 2, max_new_tokens: 6, min_length: 100, batch_size: 3}
"""
METHODS = {
    "prefix": "{kind: prefix, prefix_len: 2, mlp_hidden: 16}",
    "lora": "{kind: lora, rank: 2}",
    "prompt": "{kind: prompt, prompt_len: 3}",
    "full": "{kind: full}",
}

GREEDY = ["decode.num_beams=1", "decode.max_new_tokens=9"]  # min_length 100: outputs are 9 tokens, not 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    made = {}
    for name, method in METHODS.items():
        folder = tmp_path_factory.mktemp(name)
        text = CONFIG.replace("MODEL", "tiny-gpt2").replace("METHOD", method)
        made[name], _ = experiment.train(write_config(folder, text), [], str(folder / "run"))
    # The prefix run again, decoded by the run itself with other settings: what `peftrun generate`
    # must give for the prefix run with these settings as decode.* overrides.
    folder = tmp_path_factory.mktemp("prefix-greedy")
    text = CONFIG.replace("MODEL", "tiny-gpt2").replace("METHOD", METHODS["prefix"])
    made["prefix-greedy"], _ = experiment.train(write_config(folder, text), GREEDY, str(folder / "run"))
    folder = tmp_path_factory.mktemp("lora-merged")
    text = CONFIG.replace("MODEL", "tiny-gpt2").replace("METHOD", "{kind: lora, rank: 2, merge: true}")
    made["lora-merged"], _ = experiment.train(write_config(folder, text), [], str(folder / "run"))
    folder = tmp_path_factory.mktemp("bart")
    text = CONFIG.replace("MODEL", "tiny-bart").replace("METHOD", METHODS["lora"])
    made["bart"], _ = experiment.train(write_config(folder, text), ["decode.splits=[]"], str(folder / "run"))
    return made


def predictions(run):
    return [json.loads(line) for line in (run / "predictions" / "dev.jsonl").read_text().splitlines()]


def invoke(args, stdin: str | None = None):
    return CliRunner().invoke(app, ["generate", *args], input=stdin)


def test_a_mixed_file_equals_decoding_each_run(runs, tmp_path):
    names = ["prefix", "lora", "prompt", "full"]
    lines, expected = [], []
    for i in range(5):
        for name in names:  # interleaved: every chunk mixes every adapter
            record = predictions(runs[name])[i]
            lines.append(json.dumps({"id": f"{name}-{i}", "adapter": name, "input": record["id"]}))
            expected.append(record["output"])
    lines.append(json.dumps({"id": "base", "adapter": None, "input": predictions(runs["lora"])[0]["id"]}))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    args = [a for n in names for a in ("--adapter", f"{n}={runs[n]}")]
    result = invoke([*args, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert "adapters full change the base model: their rows are decoded apart, per adapter" in result.output
    assert "generated 21 outputs" in result.output
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == [json.loads(line)["id"] for line in lines]  # input order
    assert [o["output"] for o in out[:-1]] == expected
    lm = peftrun.load(*(f"{n}={runs[n]}" for n in names))
    assert out[-1]["output"] == lm.generate([json.loads(lines[-1])["input"]], adapters=None)[0]
    assert any(o["output"] != out[-1]["output"] for o in out[:-1])


LLAMA_METHODS = {
    "prefix": METHODS["prefix"],
    "lora": "{kind: lora, rank: 2, targets: [all-linear]}",
    "ptuning": "{kind: ptuning, prompt_len: 2, encoder_hidden: 16}",
}


@pytest.fixture(scope="module")
def llama_runs(tmp_path_factory):
    made = {}
    for name, method in LLAMA_METHODS.items():
        folder = tmp_path_factory.mktemp(f"llama-{name}")
        text = CONFIG.replace("MODEL", "tiny-llama").replace("METHOD", method)
        made[name], _ = experiment.train(write_config(folder, text), [], str(folder / "run"))
    return made


def test_a_mixed_file_of_llama_runs_equals_decoding_each_run(llama_runs, tmp_path):
    """The Llama family through the whole path: trained runs, each decoded by itself, and one
    mixed `peftrun generate` file (GQA prefix, all-linear LoRA, P-tuning rows in one batch)."""
    names = list(LLAMA_METHODS)
    lines, expected = [], []
    for i in range(5):
        for name in names:
            record = predictions(llama_runs[name])[i]
            lines.append(json.dumps({"id": f"{name}-{i}", "adapter": name, "input": record["id"]}))
            expected.append(record["output"])
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    args = [a for n in names for a in ("--adapter", f"{n}={llama_runs[n]}")]
    result = invoke([*args, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "out.jsonl") == expected
    lm = peftrun.load(*(f"{n}={llama_runs[n]}" for n in names))
    source = json.loads(lines[0])["input"]
    assert lm.generate([source], adapters=["prefix"]) == [expected[0]]


def write_lines(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def outputs(path) -> list[str]:
    return [json.loads(line)["output"] for line in path.read_text().splitlines()]


def test_each_group_decodes_with_its_own_runs_settings(runs, tmp_path):
    """Rows of runs with different decoding settings are decoded in separate groups, each with its
    run's settings: every row equals what that run's own decoding gave."""
    prefix, greedy = predictions(runs["prefix"]), predictions(runs["prefix-greedy"])
    assert all(r["output"] for r in prefix + greedy)  # non-empty: equal outputs mean something
    rows = [{"id": i, "adapter": "p", "input": r["id"]} for i, r in enumerate(prefix[:3])]
    rows += [{"id": 3 + i, "adapter": "g", "input": r["id"]} for i, r in enumerate(greedy[:3])]
    write_lines(tmp_path / "in.jsonl", rows[::2] + rows[1::2])  # interleaved
    args = ["--adapter", f"p={runs['prefix']}", "--adapter", f"g={runs['prefix-greedy']}"]
    result = invoke([*args, "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    assert "rows whose decoding settings differ are decoded in separate groups" in result.output
    got = {json.loads(line)["id"]: json.loads(line)["output"] for line in (tmp_path / "out.jsonl").open()}
    assert [got[i] for i in range(6)] == [r["output"] for r in prefix[:3] + greedy[:3]]


def test_decode_overrides_and_base_equal_the_run_decoded_with_those_settings(runs, tmp_path):
    """`peftrun generate --base MODEL decode.k=v ...` decodes a run as that run decodes itself with
    those settings (prefix-greedy: the prefix run's training, decoded with GREEDY in its config)."""
    from safetensors.torch import load_file

    stored = [load_file(runs[r] / "adapter" / "prefix.safetensors") for r in ("prefix", "prefix-greedy")]
    assert stored[0].keys() == stored[1].keys()
    assert all(torch.equal(stored[0][k], stored[1][k]) for k in stored[0])  # one adapter, two decodings
    expected = [r["output"] for r in predictions(runs["prefix-greedy"])]
    assert all(expected) and expected != [r["output"] for r in predictions(runs["prefix"])]
    sources = [r["id"] for r in predictions(runs["prefix-greedy"])]
    write_lines(tmp_path / "in.jsonl", [{"id": i, "input": source} for i, source in enumerate(sources)])
    io = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]
    result = invoke(["--adapter", f"p={runs['prefix']}", "--base", "tiny-gpt2", *io, *GREEDY])
    assert result.exit_code == 0, result.output
    assert outputs(tmp_path / "out.jsonl") == expected
    result = invoke(["--adapter", f"p={runs['prefix']}", "--base", "tiny-bart", *io, *GREEDY])
    assert result.exit_code == 2 and "not on the base tiny-bart" in result.output, result.output
    result = invoke(["--adapter", f"p={runs['prefix']}", *io, "train.lr=1"])
    assert result.exit_code == 2 and "only decode.* settings can be changed here" in result.output


def test_the_python_api(runs):
    lm = peftrun.load(str(runs["prefix"]), f"l={runs['lora']}")
    assert lm.names == [runs["prefix"].name, "l"] and lm.tokenizer is not None
    first = predictions(runs["prefix"])[0]
    assert lm.generate(first["id"]) == [first["output"]]  # the first adapter by default
    ids = torch.tensor([lm.tokenizer(" name : Aromi")["input_ids"]])
    assert lm.logits(ids, adapter="l").shape == (1, ids.shape[1], 2048)
    assert (lm.logits(ids, adapter="l") - lm.logits(ids, adapter=None)).abs().max() > 0


def test_a_lora_that_merges_is_served_unmerged_beside_other_adapters(runs):
    """A run configured to merge its LoRA into the base weights would change every row of a shared
    base: served beside a prefix, the prefix's rows and the base's rows stay their own."""
    lm = peftrun.load(f"m={runs['lora-merged']}", f"p={runs['prefix']}")
    prefix = predictions(runs["prefix"])
    assert lm.generate([r["id"] for r in prefix], adapters="p") == [r["output"] for r in prefix]
    ids = torch.tensor([lm.tokenizer(" name : Aromi")["input_ids"]])
    with torch.no_grad():
        plain = models.load("tiny-gpt2", seed=101).model.eval()(ids).logits
    assert (lm.logits(ids, adapter=None) - plain).abs().max() < 1e-6
    assert (lm.logits(ids, adapter="m") - plain).abs().max() > 1e-4  # and the LoRA applies to its rows


def test_bad_lines_stop_with_their_number_after_the_lines_before_are_written(runs, tmp_path):
    good = json.dumps({"id": 1, "adapter": "p", "input": predictions(runs["prefix"])[0]["id"]})
    cases = {
        "{not json": "in.jsonl:2: not a JSON object",
        json.dumps(
            {"id": 2, "adapter": "nope", "input": "name[A]"}
        ): "in.jsonl:2: unknown adapter 'nope'; loaded: p",
        json.dumps([1, 2]): "in.jsonl:2: expected a JSON object",
        json.dumps({"id": 3, "adapter": "p"}): "in.jsonl:2: 'input' must be a string",
    }
    for bad, message in cases.items():
        (tmp_path / "in.jsonl").write_text(good + "\n" + bad + "\n" + good + "\n")
        out = tmp_path / "out.jsonl"
        result = invoke(
            ["--adapter", f"p={runs['prefix']}", "--input", str(tmp_path / "in.jsonl"), "--output", str(out)]
        )
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
        assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1]  # nothing lost


def test_an_adapter_of_another_base_is_refused_naming_both(runs):
    with pytest.raises(
        PeftrunError,
        match=r"adapter b was trained on tiny-bart \(seed 101\); the base here is tiny-gpt2 \(seed 101\)",
    ):
        peftrun.load(f"p={runs['prefix']}", f"b={runs['bart']}")


def test_stdin_to_stdout_in_a_pipe(runs):
    source = predictions(runs["lora"])[1]
    line = json.dumps({"id": "x", "adapter": "l", "input": source["id"]}) + "\n"
    command = [sys.executable, "-m", "peftrun", "generate", "--adapter", f"l={runs['lora']}"]
    done = subprocess.run(command, input=line * 2, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = [json.loads(row) for row in done.stdout.splitlines()]
    assert outputs == [{"id": "x", "adapter": "l", "output": source["output"]}] * 2
