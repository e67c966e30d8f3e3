"""`peftrun show RUN_DIR` and `peftrun ls`: a finished run's card and row carry its real numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_config
from typer.testing import CliRunner

from peftrun.cli import app
from peftrun.run_card import human_size
from peftrun.runs import Run

runner = CliRunner()

TINY = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 16, dev_loss_size: 4}
method: {kind: prefix, prefix_len: 5}
train: {lr: 1e-3, epochs: 1, batch_size: 4, max_steps: 3, device: cpu}
decode: {splits: [dev], limit: 3, num_beams: 1, max_new_tokens: 6, batch_size: 3}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny prefix run (trained once for the module), beside an unfinished one."""
    from peftrun import config, experiment

    folder = tmp_path_factory.mktemp("runs")
    run_dir, _ = experiment.train(write_config(folder, TINY), [], str(folder / "runs" / "prefix-tiny"))
    other = config.load(write_config(folder, "model: {name: tiny-bart}\nmethod: {kind: lora}\n", "b.yaml"))
    unfinished = Run(folder / "runs" / "unfinished")  # killed before training started: no counts yet
    unfinished.start("new", "", other.to_yaml(), {})
    unfinished.unlock()
    return run_dir


def adapter_size(run_dir: Path) -> int:
    return sum(f.stat().st_size for f in (run_dir / "adapter").rglob("*") if f.is_file())


def test_show_a_run_dir_as_json_has_its_numbers(finished):
    result = runner.invoke(app, ["show", str(finished), "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    meta = json.loads((finished / "meta.json").read_text())
    dev = json.loads((finished / "metrics/dev.json").read_text())
    assert card["status"] == "done" and card["error"] is None
    assert card["method"] == "prefix" and card["model"] == "tiny-gpt2" and card["dataset"] == "e2e"
    assert card["parameters"] == meta["parameters"]
    assert card["parameters"]["stored"] < card["parameters"]["trainable"]  # the MLP is not stored
    assert card["adapter_bytes"] == adapter_size(finished) > 0
    assert card["metrics"] == {"dev": dev["scores"]} and card["instances"] == {"dev": 3}
    assert card["scores"] == {"dev": dev["scores"]["BLEU"]} and card["key_metric"] == "BLEU"
    assert card["decode"] == {"num_beams": 1, "max_new_tokens": 6, "max_length": None, "length_penalty": 1.0}
    assert card["updates"] == meta["updates"] == 3


def test_show_a_run_dir_as_text(finished):
    result = runner.invoke(app, ["show", str(finished)])
    assert result.exit_code == 0, result.output
    text = result.stdout
    p = json.loads((finished / "meta.json").read_text())["parameters"]
    size = adapter_size(finished)
    assert "status      done" in text and "method      prefix" in text and "base model  tiny-gpt2" in text
    assert f"trainable {p['trainable']:,} ({p['trainable_pct']:.3f}% of base {p['base']:,})" in text
    assert f"stored {p['stored']:,} ({p['stored_pct']:.3f}%)" in text
    assert f"{human_size(size)} ({size:,} bytes)" in text
    assert "num_beams 1, max_new_tokens 6, max_length -, length_penalty 1.0" in text
    scores = json.loads((finished / "metrics/dev.json").read_text())["scores"]
    header, row = text.splitlines()[-2:]
    assert header.split() == ["split", "instances", *scores]
    assert row.split() == ["dev", "3", *(f"{v:.4f}" if v is not None else "-" for v in scores.values())]


def test_show_a_run_dir_refuses_overrides(finished):
    result = runner.invoke(app, ["show", str(finished), "train.lr=1"])
    assert result.exit_code == 2 and "overrides apply only to a config" in result.output


def test_ls_rows_as_json_and_aligned_text(finished):
    result = runner.invoke(app, ["ls", str(finished.parent), "--json"])
    assert result.exit_code == 0, result.output
    done, unfinished = json.loads(result.stdout)
    shown = json.loads(runner.invoke(app, ["show", str(finished), "--json"]).stdout)
    assert done == {k: v for k, v in shown.items() if k in done}  # the card extends the row
    assert set(shown) - set(done) == {"metrics", "instances", "adapter_dir", "finished", "updates"}
    assert unfinished["status"] == "incomplete" and unfinished["adapter_bytes"] is None
    assert unfinished["scores"] == {} and unfinished["key_metric"] == "BLEU"

    lines = runner.invoke(app, ["ls", str(finished.parent)]).stdout.splitlines()
    assert len(lines) == 2  # one line per run, no header: the first word is the status
    p, size = done["parameters"], adapter_size(finished)
    bleu = json.loads((finished / "metrics/dev.json").read_text())["scores"]["BLEU"]
    assert lines[0].split() == [
        "done",
        "prefix",
        "tiny-gpt2",
        "stored",
        f"{p['stored_pct']:.3f}%",
        *human_size(size).split(),
        "BLEU",
        f"dev:{bleu:.4f}",
        "beams",
        "1",
        str(finished),
    ]
    assert lines[1].split() == [
        "incomplete",
        "lora",
        "tiny-bart",
        "stored",
        "?",
        "-",
        "BLEU",
        "dev:-",
        "beams",
        "5",
        str(finished.parent / "unfinished"),
    ]
    # Aligned: every column starts at the same place on every line.
    for column in ("stored", "BLEU", "beams", str(finished.parent)):
        assert len({line.index(column) for line in lines}) == 1, lines


def test_human_size():
    assert [human_size(n) for n in (None, 0, 1023, 1024, 41695, 5 * 2**20)] == [
        "-",
        "0 B",
        "1023 B",
        "1.0 KiB",
        "40.7 KiB",
        "5.0 MiB",
    ]
