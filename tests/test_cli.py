"""The command line through Typer's CliRunner; start-up stays free of torch."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, write_config
from typer.testing import CliRunner

from peftrun.cli import app

runner = CliRunner()


def flat(text: str) -> str:
    """Help text without rich's boxes and line wrapping."""
    for char in "│╭╮╰╯─":
        text = text.replace(char, " ")
    return " ".join(text.split())


def commands() -> dict:
    """The app's commands as click sees them (name -> click command)."""
    import typer.main

    return typer.main.get_command(app).commands


# The options each command offers (besides --help).
OPTIONS = {
    "train": {"--run-dir", "--overwrite", "--resume-from-last-good", "--gpus"},
    "decode": {"--split", "--name", "--overwrite"},
    "export": {"--to", "--out"},
    "eval": {
        "--predictions",
        "--dataset",
        "--split",
        "--references",
        "--reference-style",
        "--bleu",
        "--compare",
        "--samples",
        "--decode",
        "--json",
    },
    "show": {"--json"},
    "params": {"--json"},
    "ls": {"--json"},
    "sweep": {
        "--root",
        "--dry-run",
        "--workers",
        "--executor",
        "--fail-fast",
        "--partition",
        "--gpus-per-task",
        "--time",
        "--mem",
        "--pack",
        "--reselect",
        "--json",
    },
    "train-packed": set(),
    "generate": {"--adapter", "--input", "--output", "--base"},
    "serve": {
        "--adapter",
        "--base",
        "--host",
        "--port",
        "--api-key-file",
        "--adapter-root",
        "--max-batch",
        "--max-queue",
        "--no-mixing",
        "--device",
    },  # fmt: skip
    "report": {
        "--split",
        "--by",
        "--format",
        "--out",
        "--plots",
        "--bleu",
        "--samples",
        "--decode",
        "--reference-style",
    },  # fmt: skip
}


def test_help_does_not_import_torch_or_transformers():
    code = "import sys; from peftrun.cli import app; import peftrun.config; print('torch' in sys.modules, 'transformers' in sys.modules)"  # noqa: E501
    out = subprocess.run([sys.executable, "-m", "peftrun", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = flat(out.stdout)
    for name, command in commands().items():  # every command, with its docstring
        assert f" {name} {flat(command.help)}" in listed, name
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_every_command_has_help():
    assert set(commands()) == set(OPTIONS)
    for name, command in commands().items():
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
        shown = flat(result.output)
        assert f"{name} [OPTIONS]" in shown and flat(command.help) in shown, name
        options = {opt for param in command.params for opt in param.opts if opt.startswith("--")}
        assert options == OPTIONS[name], name
        for param in command.params:  # every argument and option says what it is, in the help
            assert param.help and param.help.strip(), f"{name} {param.opts}: no help"
            assert flat(param.help) in shown, f"{name} {param.opts}"
            assert all(opt in shown for opt in param.opts if opt.startswith("--")), name


def test_show_prints_the_resolved_config_with_overrides():
    result = runner.invoke(
        app, ["show", str(ROOT / "configs/e2e/gpt2-medium/prefix.yaml"), "train.lr=5e-5", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["config"]["train"]["lr"] == 5e-5
    assert payload["config"]["method"]["prefix_len"] == 5
    assert payload["run_dir"].startswith("runs/")


def test_user_errors_are_one_line_without_traceback(tmp_path):
    cases = [
        ["show", str(tmp_path / "missing.yaml")],
        ["show", str(write_config(tmp_path, "train:\n  lrr: 1\n"))],
        ["train", str(write_config(tmp_path, "method:\n  kind: magic\n", "m.yaml"))],
        ["train", str(write_config(tmp_path, "model:\n  name: no-org/no-model\n", "n.yaml"))],
        ["eval", str(tmp_path)],
        ["ls", str(tmp_path / "nothing")],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if line.startswith("peftrun: error:")]
        assert len(errors) == 1, result.output
    assert not any(tmp_path.glob("runs*")), "nothing is written for a bad config"


def test_ls_on_an_empty_folder(tmp_path):
    result = runner.invoke(app, ["ls", str(tmp_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_params_counts_real_sizes_offline():
    result = runner.invoke(app, ["params", str(ROOT / "configs/e2e/gpt2-medium/prefix.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert (counts["base"], counts["trainable"], counts["stored"]) == (354_823_168, 25_744_896, 245_760)


def _fake_run(path, outputs):
    from peftrun.runs import Run

    refs = [
        ["the cat sat on the mat", "a cat sat on a mat"],
        ["dogs bark loudly at night", "the dog barks at night"],
    ] * 10
    records = [
        {"id": str(i), "source": "s", "output": o, "references": r}
        for i, (o, r) in enumerate(zip(outputs, refs, strict=True))
    ]
    Run(path).write_predictions("dev", records)
    return path


def test_compare_gives_a_bootstrap_interval(tmp_path):
    good = _fake_run(tmp_path / "a", ["the cat sat on the mat", "the dog barks at night"] * 10)
    bad = _fake_run(tmp_path / "b", ["cat", "night"] * 10)
    result = runner.invoke(
        app,
        [
            "eval",
            "--compare",
            str(good),
            "--compare",
            str(bad),
            "--split",
            "dev",
            "--samples",
            "200",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {r["metric"]: r for r in json.loads(result.stdout)}
    assert rows["BLEU"]["delta"] < 0 and rows["BLEU"]["ci_high"] < 0 and rows["BLEU"]["b_better"] == 0.0


def test_eval_any_outputs_file_against_a_references_file(tmp_path):
    refs = tmp_path / "refs.jsonl"
    refs.write_text(
        '{"summary": "the council closed the road"}\n{"references": ["rain fell", "it rained"]}\n'
    )
    outputs = tmp_path / "out.txt"
    outputs.write_text("the council closed the road\nrain fell\n")
    result = runner.invoke(
        app, ["eval", "--predictions", str(outputs), "--references", str(refs), "--dataset", "xsum", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test"]["ROUGE-1"] == 100.0
    outputs.write_text("only one line\n")
    result = runner.invoke(
        app, ["eval", "--predictions", str(outputs), "--references", str(refs), "--dataset", "xsum"]
    )
    assert result.exit_code != 0 and "expected 2" in result.output
    bad = tmp_path / "refs.csv"
    bad.write_text("source,target\na,b\n")
    result = runner.invoke(app, ["eval", "--predictions", str(outputs), "--references", str(bad)])
    assert result.exit_code != 0 and "'mr' and 'ref'" in result.output
    outputs.write_bytes(b"caf\xe9\n")
    result = runner.invoke(
        app, ["eval", "--predictions", str(outputs), "--references", str(refs), "--dataset", "xsum"]
    )
    assert result.exit_code != 0 and "UTF-8" in result.output


def test_eval_e2e_outputs_file_against_the_official_split(tmp_path):
    from peftrun.data import e2e

    instances = e2e.load_instances("dev")
    outputs = tmp_path / "out.txt"
    outputs.write_text("".join(i.references[0] + "\n" for i in instances))
    result = runner.invoke(
        app, ["eval", "--predictions", str(outputs), "--dataset", "e2e", "--split", "dev", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dev"]["BLEU"] > 0.5


RUN = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 24, dev_loss_size: 4}
method: {kind: full}
train: {lr: 5e-2, epochs: 1, batch_size: 8, loss_reduction: token_mean}
decode: {splits: [dev], limit: 2, num_beams: 1, max_new_tokens: 6, batch_size: 2}
"""


def test_decode_decodes_the_stored_adapter_again_and_prints_its_scores(tmp_path):
    from peftrun import experiment

    run_dir, results = experiment.train(write_config(tmp_path, RUN), [], str(tmp_path / "run"))
    stored = (run_dir / "predictions/dev.jsonl").read_text()
    for path in [
        run_dir / "predictions/dev.jsonl",
        run_dir / "predictions/dev.txt",
        run_dir / "metrics/dev.json",
    ]:
        path.unlink()
    result = runner.invoke(app, ["decode", str(run_dir), "--split", "dev"])
    assert result.exit_code == 0, result.output
    # The same outputs as the run decoded from the adapter it stored, and the same scores ...
    again = (run_dir / "predictions/dev.jsonl").read_text()
    assert [json.loads(line)["output"] for line in again.splitlines()] == [
        json.loads(line)["output"] for line in stored.splitlines()
    ]
    assert again == stored
    scores = json.loads((run_dir / "metrics/dev.json").read_text())["scores"]
    assert scores == results["dev"]["scores"]
    # ... printed as a table: a header of metric names and one row per split.
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    header, row = lines
    assert header.split() == ["split", *scores] and row.split()[0] == "dev"
    printed = dict(zip(scores, row.split()[1:], strict=True))
    assert printed == {k: "n/a" if v is None else f"{v:.4f}" for k, v in scores.items()}


def test_version_names_peftrun_torch_and_transformers_without_importing_torch():
    from importlib import metadata

    code = "import sys; from peftrun.cli import versions; print(versions()); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    line, imported = out.splitlines()
    assert line == (
        f"peftrun {metadata.version('peftrun')} (torch {metadata.version('torch')}, "
        f"transformers {metadata.version('transformers')})"
    )
    assert imported == "False"
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == line


def test_gpus_relaunches_the_same_command_under_accelerate(monkeypatch, tmp_path):
    """docs/studies.md#data-parallel-training-and-trackers: `peftrun train CFG --gpus N` is
    `accelerate launch --multi_gpu --num_processes N -m peftrun train CFG` (the other arguments as
    given, --gpus itself dropped); its exit code is the launched command's. The launch is caught at
    the subprocess seam: no GPU, no accelerate."""
    import subprocess as subprocess_module

    launched = []

    def fake_run(command, *args, **kwargs):
        launched.append(command)
        return subprocess_module.CompletedProcess(command, 3)

    monkeypatch.setattr(subprocess_module, "run", fake_run)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = str(write_config(tmp_path, RUN))
    for given in (["--gpus", "4"], ["--gpus=4"]):
        argv = ["train", config, "train.lr=0.1", *given, "--run-dir", str(tmp_path / "r")]
        monkeypatch.setattr(sys, "argv", ["peftrun", *argv])
        result = runner.invoke(app, argv)
        assert result.exit_code == 3, result.output
        assert launched.pop() == [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "4",
            "--multi_gpu",
            "-m",
            "peftrun",
            "train",
            config,
            "train.lr=0.1",
            "--run-dir",
            str(tmp_path / "r"),
        ]
    assert not (tmp_path / "r").exists()  # this process trained nothing: the launched ones do
    # One of the launched processes (the launcher sets WORLD_SIZE) does not launch again.
    monkeypatch.setenv("WORLD_SIZE", "4")
    from peftrun.cli import _launch_data_parallel

    _launch_data_parallel(4)
    assert launched == []


def test_eval_of_a_run_directory_rescores_its_predictions_to_its_stored_metrics(tmp_path):
    """`peftrun eval RUN_DIR` re-scores the run's stored predictions (predictions/SPLIT.jsonl): the
    same numbers as the run's metrics/SPLIT.json, and as the metrics computed here from the outputs
    and references in that file; edited predictions are scored as they now are."""
    from peftrun import experiment
    from peftrun.metrics import score

    run_dir, _ = experiment.train(write_config(tmp_path, RUN), [], str(tmp_path / "run"))
    stored = json.loads((run_dir / "metrics/dev.json").read_text())["scores"]
    predictions = run_dir / "predictions/dev.jsonl"

    def scored_here() -> dict:
        records = [json.loads(line) for line in predictions.read_text().splitlines()]
        assert len(records) == 2
        return score("e2e", [r["output"] for r in records], [r["references"] for r in records]).scores

    def scored_by_eval() -> dict:
        result = runner.invoke(app, ["eval", str(run_dir), "--json"])
        assert result.exit_code == 0, result.output
        scores = json.loads(result.stdout)
        assert list(scores) == ["dev"]
        return scores["dev"]

    assert scored_by_eval() == stored == scored_here()
    assert any(isinstance(v, float) for v in stored.values())  # numbers were compared, not only None
    # Re-scoring means reading the predictions again: the first output becomes a reference.
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    records[0]["output"] = records[0]["references"][0]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = scored_by_eval()
    assert again == scored_here() and again["BLEU"] > stored["BLEU"]


def test_every_commands_user_error_is_one_line_and_exit_2_and_debug_adds_the_traceback(tmp_path):
    """README/house rule: a mistake a user can make is one line on stderr, `peftrun: error: …`,
    exit code 2, whichever command met it; `--debug` prints the traceback before that line."""
    missing = str(tmp_path / "missing")
    bad_input = {
        "train": [f"{missing}.yaml"],
        "train-packed": [f"{missing}.json"],
        "decode": [missing],
        "export": [missing, "--to", "peft", "--out", str(tmp_path / "out")],
        "eval": [],
        "show": [f"{missing}.yaml"],
        "params": [f"{missing}.yaml"],
        "ls": [missing],
        "sweep": [f"{missing}.yaml"],
        "report": [str(tmp_path), "--format", "rtf"],
        "generate": ["--adapter", missing],
        "serve": ["--adapter", missing],
    }
    assert set(bad_input) == set(commands())  # every command is tried
    for command, args in bad_input.items():
        result = runner.invoke(app, [command, *args])
        assert result.exit_code == 2, (command, result.output)
        assert len(result.output.splitlines()) == 1 and result.output.startswith("peftrun: error: "), (
            command,
            result.output,
        )
        debug = runner.invoke(app, ["--debug", command, *args])
        assert debug.exit_code == 2
        lines = debug.output.splitlines()
        assert lines[0] == "Traceback (most recent call last):" and lines[-1] == result.output.strip()
        assert any(line.startswith("peftrun.errors.PeftrunError: ") for line in lines), command
