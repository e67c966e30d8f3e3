"""Decoding a trained run again with other settings (`peftrun decode RUN decode.*=...`), re-scoring
its predictions against other references (`peftrun eval RUN --reference-style ... --bleu ...`),
reading a decode in the report (`peftrun report --decode NAME`) and the output-length columns.

What is checked: a decode with other settings lands in RUN/decodes/NAME with those settings and
never changes a byte of the run's own files; re-running skips; a NAME that holds other settings, and
any override outside decode.*, are one-line errors; the report reads the decode's numbers; a
re-score against tokenised references gives the -p BLEU of scoring those outputs directly."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import write_config
from typer.testing import CliRunner

from peftrun.cli import app

runner = CliRunner()

RUN = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 24, dev_loss_size: 4}
method: {kind: full}
train: {lr: 5e-2, epochs: 1, batch_size: 8, loss_reduction: token_mean}
decode: {splits: [dev], limit: 3, num_beams: 1, max_new_tokens: 6, batch_size: 2}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny trained run (dev decoded greedily, 3 instances), trained once for the module."""
    from peftrun import experiment

    folder = tmp_path_factory.mktemp("trained")
    run_dir, _ = experiment.train(write_config(folder, RUN), [], str(folder / "run"))
    return run_dir


@pytest.fixture
def run_dir(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run, for one test to change."""
    copy = tmp_path / "runs" / "run"
    shutil.copytree(trained, copy)
    return copy


def digests(folder: Path, skip: str | None = None) -> dict[str, str]:
    """Every file under `folder` (less those under `skip`) → sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not (skip and p.relative_to(folder).parts[0] == skip)
    }


@pytest.fixture
def beams_used(monkeypatch) -> list[int]:
    """The num_beams of every GenerationConfig decoding builds (the settings really used)."""
    from peftrun import decode

    used: list[int] = []
    real = decode.generation_config

    def spy(cfg, tokenizer, model_config):
        used.append(cfg.num_beams)
        return real(cfg, tokenizer, model_config)

    monkeypatch.setattr(decode, "generation_config", spy)
    return used


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1 and result.output.startswith("peftrun: error: "), (
        result.output
    )
    return result.output


def test_a_decode_with_other_settings_lands_apart_and_leaves_the_run_untouched(run_dir: Path, beams_used):
    import yaml

    before = digests(run_dir)
    result = runner.invoke(app, ["decode", str(run_dir), "--split", "dev", "decode.num_beams=3"])
    assert result.exit_code == 0, result.output
    assert digests(run_dir, skip="decodes") == before  # the run's own files: byte for byte
    assert beams_used == [3]  # the override is what decoding used
    folder = run_dir / "decodes" / "num_beams=3"
    settings = yaml.safe_load((folder / "decode.yaml").read_text())
    own = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())["decode"]
    assert settings["overrides"] == ["decode.num_beams=3"]
    assert settings["decode"] == {**{k: v for k, v in own.items() if k != "splits"}, "num_beams": 3}
    records = [json.loads(line) for line in (folder / "predictions" / "dev.jsonl").read_text().splitlines()]
    own_records = [
        json.loads(line) for line in (run_dir / "predictions" / "dev.jsonl").read_text().splitlines()
    ]
    assert [r["id"] for r in records] == [r["id"] for r in own_records] and len(records) == 3
    text = (folder / "predictions" / "dev.txt").read_text().splitlines()
    assert text == [r["output"] for r in records]
    metrics = json.loads((folder / "metrics" / "dev.json").read_text())
    assert set(metrics["scores"]) == set(json.loads((run_dir / "metrics" / "dev.json").read_text())["scores"])
    assert metrics["instances"] == 3 and "output_tokens_mean" in metrics and "truncated_pct" in metrics
    # What was printed is the decode's scores.
    header, row = result.stdout.splitlines()
    assert header.split()[1:] == list(metrics["scores"]) and row.split()[0] == "dev"


def test_rerunning_skips_and_names_holding_other_settings_or_other_keys_are_refused(
    run_dir: Path, beams_used
):
    args = ["decode", str(run_dir), "--split", "dev", "decode.num_beams=2"]
    assert runner.invoke(app, args).exit_code == 0
    folder = run_dir / "decodes" / "num_beams=2"
    done = digests(folder)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert beams_used == [2]  # nothing decoded the second time ...
    assert digests(folder) == done  # ... nor written
    assert "skipped" in again.stderr and again.stdout.splitlines()[1].split()[0] == "dev"
    # The same name with other settings: one line, nothing written.
    clash = runner.invoke(app, [*args[:-1], "decode.num_beams=4", "--name", "num_beams=2"])
    assert "num_beams" in one_line_error(clash) and "--name" in clash.output
    assert digests(folder) == done
    # A key outside decode.*: one line, nothing made.
    other = runner.invoke(app, ["decode", str(run_dir), "--split", "dev", "train.lr=1.0"])
    assert "train.lr" in one_line_error(other)
    assert sorted(p.name for p in (run_dir / "decodes").iterdir()) == ["num_beams=2"]
    assert beams_used == [2]


def test_a_plain_decode_refuses_a_scored_split_unless_overwrite_and_scores_an_unscored_one(
    run_dir: Path, beams_used
):
    from peftrun import experiment
    from peftrun.errors import PeftrunError

    before = digests(run_dir)
    with pytest.raises(PeftrunError, match="--overwrite"):
        experiment.decode(run_dir, ["dev"])
    assert digests(run_dir) == before and beams_used == []
    # Decoded but never scored (killed while scoring): scored, not decoded again.
    (run_dir / "metrics" / "dev.json").unlink()
    results = experiment.decode(run_dir, ["dev"])
    assert beams_used == [] and digests(run_dir) == before
    assert results["dev"]["scores"] == json.loads((run_dir / "metrics" / "dev.json").read_text())["scores"]
    # Told to: decoded again, with the run's own settings, into its own files.
    experiment.decode(run_dir, ["dev"], overwrite=True)
    assert beams_used == [1] and digests(run_dir) == before  # greedy again: the same outputs


def test_the_report_reads_a_decode_when_asked(run_dir: Path, tmp_path: Path):
    from peftrun.studies import report as reports

    assert runner.invoke(app, ["decode", str(run_dir), "--split", "dev", "decode.num_beams=3"]).exit_code == 0
    decoded = run_dir / "decodes" / "num_beams=3" / "metrics" / "dev.json"
    metrics = json.loads(decoded.read_text())
    metrics["scores"]["BLEU"] = 0.4242  # a number only the decode's file holds
    metrics["output_tokens_mean"], metrics["truncated_pct"] = 4.5, 25.0
    decoded.write_text(json.dumps(metrics))
    own_bleu = json.loads((run_dir / "metrics" / "dev.json").read_text())["scores"]["BLEU"]
    other = tmp_path / "runs" / "other"  # a finished run without that decode
    shutil.copytree(run_dir, other)
    shutil.rmtree(other / "decodes")

    report = reports.build([tmp_path / "runs"], "dev", decode="num_beams=3", samples=10)
    (row,) = report.rows
    assert row.values["BLEU"] == [pytest.approx(42.42)]
    assert row.values["output_tokens_mean"] == [4.5] and row.values["truncated_pct"] == [25.0]
    (record,) = row.runs
    assert record.read_predictions("dev") == [
        json.loads(line)
        for line in (decoded.parent.parent / "predictions" / "dev.jsonl").read_text().splitlines()
    ]
    assert [r.state for r in row.missing] == ["no num_beams=3 decode"]
    own = reports.build([tmp_path / "runs"], "dev", samples=10)
    bleu_cells = own.rows[0].values["BLEU"]
    assert bleu_cells and all(v == pytest.approx(own_bleu * 100) for v in bleu_cells)
    # Through the command line: the decode's numbers, and the run without it listed as not finished.
    result = runner.invoke(
        app, ["report", str(tmp_path / "runs"), "--split", "dev", "--decode", "num_beams=3"]
    )
    assert result.exit_code == 0, result.output
    assert "42.4" in result.stdout and "no num_beams=3 decode" in result.stdout
    missing = runner.invoke(app, ["report", str(tmp_path / "runs"), "--split", "dev", "--decode", "nothing"])
    assert "nothing" in one_line_error(missing)


def test_eval_rescores_against_tokenized_references_apart_with_the_py_bleu(run_dir: Path, tmp_path: Path):
    from peftrun import data, scoring
    from peftrun.config import DataConfig

    # Outputs that are raw references: raw and tokenised references then score them apart.
    predictions = run_dir / "predictions" / "dev.jsonl"
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    for record in records:
        record["output"] = record["references"][0]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in records))
    outputs = tmp_path / "outputs.txt"
    outputs.write_text("".join(r["output"] + "\n" for r in records))
    before = digests(run_dir)

    result = runner.invoke(
        app, ["eval", str(run_dir), "--reference-style", "tokenized", "--bleu", "py", "--json"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["dev"]
    assert list(scores)[:2] == ["BLEU_py", "NIST_py"] and "BLEU" not in scores and "NIST" not in scores
    assert digests(run_dir, skip="rescores") == before  # the run's own metrics untouched

    # The same numbers as scoring the outputs file directly against the tokenised references.
    tokenized = data.load_instances(DataConfig(dataset="e2e", reference_style="tokenized"), "dev")
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"references": list(i.references)}) + "\n" for i in tokenized[:3]))
    direct = scoring.score_file(outputs, "e2e", "dev", "tokenized", refs)["scores"]
    assert scores["BLEU_py"] == direct["BLEU_py"] and scores["NIST_py"] == direct["NIST_py"]
    raw = scoring.score_file(outputs, "e2e", "dev", "raw", _refs_file(tmp_path, records))["scores"]
    assert scores["BLEU_py"] != raw["BLEU_py"]  # the references really changed
    stored = json.loads((run_dir / "rescores" / "tokenized" / "metrics" / "dev.json").read_text())
    assert stored["reference_style"] == "tokenized" and stored["scores"]["BLEU_py"] == direct["BLEU_py"]
    assert "BLEU" in stored["scores"]  # the file keeps both variants


def test_a_decode_rescored_against_tokenized_references_reaches_the_report(run_dir: Path, tmp_path: Path):
    """`peftrun eval RUN --reference-style tokenized --decode NAME` scores the decode's outputs into
    RUN/decodes/NAME/rescores/tokenized (the decode's own metrics untouched), and `peftrun report
    --decode NAME --reference-style tokenized` reads those numbers; a run without them is listed."""
    from peftrun.studies import report as reports

    assert runner.invoke(app, ["decode", str(run_dir), "--split", "dev", "decode.num_beams=3"]).exit_code == 0
    decode = run_dir / "decodes" / "num_beams=3"
    other = tmp_path / "runs" / "other"  # the same decode, never re-scored
    shutil.copytree(run_dir, other)
    before = digests(decode, skip="rescores")
    result = runner.invoke(
        app, ["eval", str(run_dir), "--decode", "num_beams=3", "--reference-style", "tokenized", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert digests(decode, skip="rescores") == before
    rescored = decode / "rescores" / "tokenized" / "metrics" / "dev.json"
    metrics = json.loads(rescored.read_text())
    assert metrics["reference_style"] == "tokenized"
    assert json.loads(result.stdout)["dev"]["BLEU"] == metrics["scores"]["BLEU"]
    metrics["scores"]["BLEU_py"] = 0.4242  # a number only the re-scored file holds
    rescored.write_text(json.dumps(metrics))

    report = reports.build(
        [tmp_path / "runs"], "dev", bleu="py", decode="num_beams=3", references="tokenized", samples=10
    )
    (row,) = report.rows
    assert row.values["BLEU"] == [pytest.approx(42.42)]
    assert [r.state for r in row.missing] == ["no dev metrics against tokenized references"]
    # The significance test re-scores BLEU from the predictions: with the tokenised references too.
    from peftrun import data
    from peftrun.config import DataConfig

    tokenized = {
        i.id: list(i.references)
        for i in data.load_instances(DataConfig(dataset="e2e", reference_style="tokenized"), "dev")
    }
    (record,) = row.runs
    records = record.read_predictions("dev")
    assert [r["references"] for r in records] == [tokenized[r["id"]] for r in records]
    assert (
        records[0]["references"]
        != json.loads((decode / "predictions" / "dev.jsonl").open().readline())["references"]
    )
    shown = runner.invoke(
        app,
        ["report", str(tmp_path / "runs"), "--split", "dev", "--bleu", "py", "--decode", "num_beams=3",
         "--reference-style", "tokenized"],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "42.4" in shown.stdout and "re-scored against the tokenized references" in shown.stdout
    wrong = runner.invoke(
        app, ["report", str(tmp_path / "runs"), "--split", "dev", "--reference-style", "neat"]
    )
    assert "neat" in one_line_error(wrong)
    unknown = runner.invoke(app, ["eval", str(run_dir), "--decode", "nothing", "--reference-style", "raw"])
    assert "nothing" in one_line_error(unknown)


def _refs_file(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps({"references": r["references"]}) + "\n" for r in records))
    return path


def test_output_lengths_reach_the_metrics_and_old_runs_report_a_dash(run_dir: Path, tmp_path: Path):
    from peftrun.studies import report as reports
    from peftrun.studies import tables

    records = [json.loads(line) for line in (run_dir / "predictions" / "dev.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics" / "dev.json").read_text())
    assert all(isinstance(r["output_tokens"], int) and isinstance(r["truncated"], bool) for r in records)
    assert metrics["output_tokens_mean"] == pytest.approx(sum(r["output_tokens"] for r in records) / 3)
    assert metrics["truncated_pct"] == pytest.approx(100 * sum(r["truncated"] for r in records) / 3)
    report = reports.build([run_dir.parent], "dev", samples=10)
    (row,) = report.rows
    assert row.values["output_tokens_mean"] == [metrics["output_tokens_mean"]]
    assert row.values["truncated_pct"] == [metrics["truncated_pct"]]
    text = tables.render(report, "md")
    cells, labels = _row_cells(text), [c.label for c in report.columns]
    assert cells[labels.index("out tokens")] == f"{metrics['output_tokens_mean']:.1f} (1)"
    assert cells[labels.index("truncated %")] == f"{metrics['truncated_pct']:.1f} (1)"
    # An old run: no output_tokens/truncated in its records, no lengths in its metrics.
    for record in records:
        del record["output_tokens"], record["truncated"]
    (run_dir / "predictions" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for key in ("output_tokens_mean", "truncated_pct"):
        del metrics[key]
    (run_dir / "metrics" / "dev.json").write_text(json.dumps(metrics))
    report = reports.build([run_dir.parent], "dev", samples=10)
    cells = _row_cells(tables.render(report, "md"))
    assert cells[labels.index("out tokens")] == "—" and cells[labels.index("truncated %")] == "—"
    assert cells[labels.index("BLEU")] != "—"
    # Re-scoring the old run's predictions still works, without the lengths.
    result = runner.invoke(app, ["eval", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert "output_tokens_mean" not in json.loads((run_dir / "metrics" / "dev.json").read_text())


def _row_cells(markdown: str) -> list[str]:
    """The cells of the table's one data row, less its group key (first) and "not finished" (last)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [c.strip() for c in lines[2].strip("|").split("|")][1:-1]
