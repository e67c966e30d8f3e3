"""Tune on dev, test once (`select:` in a sweep): the rule picks each group's winner, only the
winners' runs get test decoded, the winners' extra seeds are trained, a changed selection after
test was decoded is refused without --reselect (and recorded with it), and the report shows the
dev grid beside the test table. The end-to-end part runs the shipped tiny example once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peftrun.cli import app
from peftrun.errors import PeftrunError
from peftrun.runs import Run
from peftrun.studies import selection, selection_record, sweep_file
from peftrun.studies import sweep as sweeps

ROOT = Path(__file__).resolve().parents[2]
GROUPS = {"method.kind=full (fixed: kind=full-epochs=0)", "method.kind=lora", "method.kind=prefix"}
EXAMPLE = ROOT / "configs" / "sweeps" / "tiny" / "select.yaml"


def _settings(scores: dict[str, float | None]) -> list[selection.Setting]:
    return [selection.Setting(key, {}, [], score=score) for key, score in scores.items()]


def test_the_winner_is_the_best_dev_score_of_its_group_and_the_first_on_a_tie():
    groups = {
        "kind=prefix": _settings({"lr=1": 40.0, "lr=2": 55.0, "lr=3": 55.0}),
        "kind=lora": _settings({"lr=1": 61.0, "lr=2": 12.0}),
    }
    winners, undecided = selection.choose(groups, "BLEU")
    assert winners == {"kind=prefix": "lr=2", "kind=lora": "lr=1"}
    assert undecided == {}
    winners, _ = selection.choose(groups, "dev_loss")  # lower is better
    assert winners == {"kind=prefix": "lr=1", "kind=lora": "lr=2"}


def test_a_group_with_an_unfinished_setting_is_not_decided():
    groups = {"kind=prefix": _settings({"lr=1": 40.0, "lr=2": None}), "kind=lora": _settings({"a": 1.0})}
    winners, undecided = selection.choose(groups, "BLEU")
    assert winners == {"kind=lora": "a"}
    assert "lr=2" in undecided["kind=prefix"]


def test_a_changed_winner_after_test_was_decoded_is_refused_unless_reselect(tmp_path):
    record = selection_record.Record(tmp_path)
    record.data = {"winners": {"g": "lr=1"}, "test_decoded": ["lr=1-seed101"]}
    assert record.check_changes({"g": "lr=1"}, reselect=False) == []
    with pytest.raises(PeftrunError, match="--reselect"):
        record.check_changes({"g": "lr=2"}, reselect=False)
    changed = record.check_changes({"g": "lr=2"}, reselect=True)
    assert [(c["group"], c["from"], c["to"]) for c in changed] == [("g", "lr=1", "lr=2")]
    # Before test was decoded, a new winner is simply the winner.
    record.data["test_decoded"] = []
    assert record.check_changes({"g": "lr=2"}, reselect=False) == []


def test_a_baseline_group_of_one_wins_once_done_even_without_a_score():
    """An untrained baseline has no dev loss: with `metric: dev_loss` it must still be decided."""
    baseline = selection.Setting("kind=full-epochs=0", {}, [], score=None, finished=True)
    winners, undecided = selection.choose({"fixed": [baseline]}, "dev_loss")
    assert winners == {"fixed": "kind=full-epochs=0"} and undecided == {}
    running = selection.Setting("kind=full-epochs=0", {}, [], score=None, finished=False)
    assert selection.choose({"fixed": [running]}, "dev_loss")[0] == {}


def test_a_select_false_case_is_a_group_of_its_own(tmp_path):
    """Even when it shares method.kind with tuned cases, the baseline never competes with them."""
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        "  - {method: {kind: lora, rank: 2}}\n",
        "  - {method: {kind: lora, rank: 2}}\n  - {method: {kind: full}}\n",
    )
    path = tmp_path / "select.yaml"
    path.write_text(text, encoding="utf-8")
    shutil.copy(EXAMPLE.parent / "base-e2e.yaml", tmp_path / "base-e2e.yaml")
    groups = sweeps.run(path, root=tmp_path / "runs", dry_run=True)["selection"]["groups"]
    assert groups["method.kind=full"] == ["kind=full-lr=0.001", "kind=full-lr=0.03"]
    assert groups["method.kind=full (fixed: kind=full-epochs=0)"] == ["kind=full-epochs=0"]


def test_a_setting_owns_its_seeded_runs_only():
    assert selection_record.in_setting("kind=lora-lr=0.001-seed101", "kind=lora-lr=0.001")
    assert selection_record.in_setting("kind=lora-lr=0.001", "kind=lora-lr=0.001")
    assert not selection_record.in_setting("kind=lora-lr=0.0015-seed101", "kind=lora-lr=0.001")
    assert not selection_record.in_setting("kind=icl-k=2-seed=3-seed101", "kind=icl-k=2")
    assert selection_record.in_setting("seed101", "")  # nothing but the seed varies


def test_dry_run_lists_the_grid_the_rule_and_the_run_counts(tmp_path):
    summary = sweeps.run(EXAMPLE, root=tmp_path, dry_run=True)
    plan = summary["selection"]
    assert len(summary["runs"]) == plan["grid_runs"] == 5  # 2 methods x 2 lrs + the frozen base
    assert plan["winner_runs"] == 3  # one more seed for each of the 3 groups' winners
    assert plan["test_decodes"] == 6
    assert "highest dev BLEU" in plan["rule"]
    assert sorted(plan["groups"]) == [
        "method.kind=full (fixed: kind=full-epochs=0)",
        "method.kind=lora",
        "method.kind=prefix",
    ]
    assert all(json.loads(r["overrides"][-2].split("=", 1)[1]) == ["dev"] for r in summary["runs"])
    assert not (tmp_path / "tiny-select").exists()


def test_select_seeds_must_differ_from_the_grid_seeds(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8").replace("seeds: [102]", "seeds: [101]")
    path = tmp_path / "select.yaml"
    path.write_text(text, encoding="utf-8")
    shutil.copy(EXAMPLE.parent / "base-e2e.yaml", tmp_path / "base-e2e.yaml")
    with pytest.raises(PeftrunError, match="seed 101 is in both"):
        sweep_file.load(path, tmp_path / "runs")


def test_an_unknown_selection_metric_is_one_line(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8").replace("metric: BLEU", "metric: BLUE")
    path = tmp_path / "select.yaml"
    path.write_text(text, encoding="utf-8")
    shutil.copy(EXAMPLE.parent / "base-e2e.yaml", tmp_path / "base-e2e.yaml")
    with pytest.raises(PeftrunError, match="select.metric 'BLUE'"):
        sweeps.run(path, root=tmp_path / "runs", dry_run=True)


def test_a_choice_only_selection_decodes_no_test(tmp_path):
    """`select.test: false`: the winner is chosen (and its seeds trained) but no test is decoded,
    for a choice another sweep fixes before its own claims (the dry run says so)."""
    sweep = tmp_path / "choose.yaml"
    sweep.write_text(
        """
name: choose
base: base-e2e.yaml
set: {decode.limit: 3, train.epochs: 0, method: {kind: full}}
cases: [{train.lr: 1e-3}, {train.lr: 2e-3}]
seeds: [101]
select: {within: [method.kind], metric: BLEU, seeds: [102], test: false}
""",
        encoding="utf-8",
    )
    shutil.copy(EXAMPLE.parent / "base-e2e.yaml", tmp_path / "base-e2e.yaml")
    plan = sweeps.run(sweep, root=tmp_path / "runs", dry_run=True)["selection"]
    assert plan["test_decodes"] == 0 and plan["winner_runs"] == 1
    summary = sweeps.run(sweep, root=tmp_path / "runs", echo=lambda line: None)
    assert summary["counts"] == {"done": 3} and summary["selection"]["test_decoded"] == []
    assert all(
        "test" not in Run(tmp_path / "runs" / "choose" / r["name"]).read_metrics() for r in summary["runs"]
    )
    record = json.loads((tmp_path / "runs" / "choose" / "selection.json").read_text(encoding="utf-8"))
    assert list(record["winners"].values()) == ["lr=0.001"] and record.get("test_decoded", []) == []


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """The shipped tiny selection sweep, run once."""
    root = tmp_path_factory.mktemp("select")
    summary = sweeps.run(EXAMPLE, root=root, workers=2, echo=lambda line: None)
    return root / "tiny-select", summary


def test_test_is_decoded_for_the_winners_runs_only(selected):
    folder, summary = selected
    record = json.loads((folder / "selection.json").read_text(encoding="utf-8"))
    winners = record["winners"]
    assert sorted(winners) == [
        "method.kind=full (fixed: kind=full-epochs=0)",
        "method.kind=lora",
        "method.kind=prefix",
    ]
    for group, settings in record["groups"].items():
        best = max(settings, key=lambda s: s["dev_score"])["dev_score"]
        won = next(s for s in settings if s["setting"] == winners[group])
        assert won["dev_score"] == best
    runs = [p for p in folder.iterdir() if (p / "config.resolved.yaml").is_file()]
    assert len(runs) == 5 + 3  # the grid, and one more seed per winner
    for path in runs:
        winner = any(selection_record.in_setting(path.name, key) for key in winners.values())
        run = Run(path, writer=False)
        assert run.done
        assert ("test" in run.read_metrics()) == winner, path.name
        assert run.has_predictions("test") == winner, path.name
        assert "dev" in run.read_metrics(), path.name
    assert sorted(summary["selection"]["test_decoded"]) == sorted(record["test_decoded"])
    assert len(record["test_decoded"]) == 6


def test_rerunning_a_finished_selection_sweep_changes_nothing(selected):
    folder, _ = selected
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("metrics/*.json")}
    summary = sweeps.run(EXAMPLE, root=folder.parent, echo=lambda line: None)
    assert {r["state"] for r in summary["runs"]} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("metrics/*.json")} == before


def test_a_changed_selection_is_refused_then_recorded_with_reselect(selected):
    folder, _ = selected
    path = folder / "selection.json"
    original = path.read_text(encoding="utf-8")
    try:
        # Pretend the record had picked the other prefix setting and decoded its test.
        record = json.loads(original)
        group = "method.kind=prefix"
        other = next(
            s["setting"] for s in record["groups"][group] if s["setting"] != record["winners"][group]
        )
        record["winners"][group] = other
        record["test_decoded"].append(f"{other}-seed101")
        path.write_text(json.dumps(record), encoding="utf-8")
        with pytest.raises(PeftrunError, match="selection changed after test was decoded"):
            sweeps.run(EXAMPLE, root=folder.parent, echo=lambda line: None)
        sweeps.run(EXAMPLE, root=folder.parent, echo=lambda line: None, reselect=True)
        record = json.loads(path.read_text(encoding="utf-8"))
        assert [(c["group"], c["from"]) for c in record["reselections"]] == [(group, other)]
        report = CliRunner().invoke(app, ["report", str(folder), "--samples", "50"])
        assert report.exit_code == 0, report.output
        assert "Reselected after test was decoded" in report.output
    finally:
        path.write_text(original, encoding="utf-8")


def test_the_report_shows_the_winners_on_test_and_the_dev_grid(selected):
    folder, _ = selected
    result = CliRunner().invoke(
        app, ["report", str(folder), "--split", "test", "--format", "json", "--samples", "50"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert sorted(row["group"]["method.kind"] for row in data["rows"]) == ["full", "lora", "prefix"]
    assert all(row["n"] == 2 or row["identical_runs"] for row in data["rows"])  # grid seed + winner seed
    assert all(not row["missing"] for row in data["rows"])  # the losers are not "missing" on test
    (record,) = data["selection"].values()
    assert set(record["winners"]) == {
        "method.kind=full (fixed: kind=full-epochs=0)",
        "method.kind=lora",
        "method.kind=prefix",
    }
    assert [c["claim"] for c in data["claims"]] == ["prefix ahead of the frozen base"] * 2
    dev = CliRunner().invoke(
        app, ["report", str(folder), "--split", "dev", "--format", "json", "--samples", "50"]
    )
    assert len(json.loads(dev.output)["rows"]) == 5  # every setting of the grid, on dev


def test_an_archive_of_the_text_outputs_reports_the_same_tables(selected, tmp_path):
    """scripts/archive_runs.py keeps what the report reads (no weights): the same rows, p-values,
    selection and claims from the archive as from the runs themselves."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("archive_runs", ROOT / "scripts" / "archive_runs.py")
    archive_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(archive_runs)
    folder, _ = selected
    dest = tmp_path / "kept" / "tiny-select"
    copied, _ = archive_runs.archive(folder, dest)
    assert copied > 0 and not list(dest.rglob("*.pt")) and not list(dest.rglob("*.safetensors"))
    assert archive_runs.archive(folder, dest)[0] == 0  # nothing changed: nothing copied

    def tables(where):
        result = CliRunner().invoke(app, ["report", str(where), "--format", "json", "--samples", "50"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        for row in data["rows"]:
            row.pop("runs"), row.pop("identical_runs", None)
        return data["rows"], data["claims"], list(data["selection"].values())

    assert tables(dest) == tables(folder)
