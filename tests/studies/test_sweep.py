"""Sweeps: expansion into the exact run list and names, validation before anything runs, skipping
DONE runs, continuing past a failure (and saying so in the exit code), fail-fast, the manifest, and
the Slurm path through submitit's local executor."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from peftrun.cli import app
from peftrun.errors import PeftrunError
from peftrun.studies import sweep as sweeps
from peftrun.studies import sweep_file

BASE = """
model: {name: tiny-gpt2}
data: {dataset: e2e, train_size: 8, dev_loss_size: 4}
method: {kind: prefix, prefix_len: 2, mlp_hidden: 8}
train: {lr: 1e-2, epochs: 1, max_steps: 1, batch_size: 4, loss_reduction: token_mean}
decode: {splits: []}
"""


def write(tmp_path, text: str, name: str = "sweep.yaml"):
    (tmp_path / "base.yaml").write_text(BASE, encoding="utf-8")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_grid_times_cases_times_seeds_gives_the_exact_run_list_and_names(tmp_path):
    path = write(
        tmp_path,
        """
base: base.yaml
set: {train.epochs: 2}
grid: {data.train_size: [8, 16], data.subset_seed: [0, 1]}
cases:
  - {method: {kind: prefix, prefix_len: 2}, train.lr: 1e-3}
  - {method: {kind: lora, rank: 2}}
seeds: [101, 102]
name: study
""",
    )
    sweep = sweep_file.load(path, tmp_path / "runs", ["decode.limit=3"])
    assert len(sweep.points) == 2 * 2 * 2 * 2
    first = sweep.points[0]
    assert first.name == "kind=prefix-prefix_len=2-lr=0.001-train_size=8-subset_seed=0-seed101"
    assert first.run_dir == tmp_path / "runs" / "study" / first.name
    assert first.overrides == (
        "train.epochs=2",
        'method={"kind": "prefix", "prefix_len": 2}',
        'train.lr="1e-3"',  # as PyYAML read it; the config makes it a float
        "data.train_size=8",
        "data.subset_seed=0",
        "train.seed=101",
        "decode.limit=3",
    )
    names = [p.name for p in sweep.points]
    assert len(set(names)) == len(names)
    assert names[-1] == "kind=lora-train_size=16-subset_seed=1-rank=2-seed102"
    # The case's method mapping replaces the section; command-line overrides come last.
    cfg = sweeps.resolved_config(sweep.points[-1])
    assert cfg.method.kind == "lora" and cfg.method.rank == 2 and cfg.decode.limit == 3
    assert (cfg.train.epochs, cfg.train.seed, cfg.data.subset_seed) == (2, 102, 1)


def test_every_point_is_validated_before_anything_is_created(tmp_path):
    bad = write(tmp_path, "base: base.yaml\ngrid: {method.prefix_len: [2, 600]}\n")
    with pytest.raises(PeftrunError, match=r"sweep point prefix_len=600 .*method.prefix_len=600.*positions"):
        sweeps.run(bad, tmp_path / "runs")
    typo = write(tmp_path, "base: base.yaml\ngrid: {train.lrr: [1, 2]}\n", "typo.yaml")
    result = CliRunner().invoke(app, ["sweep", str(typo), "--root", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "did you mean 'train.lr'" in result.output
    assert "Traceback" not in result.output
    same = write(tmp_path, "base: base.yaml\ncases: [{train.lr: 0.01}, {train.lr: 1e-2}]\n", "same.yaml")
    with pytest.raises(PeftrunError, match="resolve to the same config"):
        sweeps.run(same, tmp_path / "runs")
    phrase = write(
        tmp_path,
        'base: base.yaml\ncases: [{method: {kind: prefix, init_phrase: "table-to-text:", prefix_len: 3}}]\n',
        "phrase.yaml",
    )
    with pytest.raises(PeftrunError, match="tokens and the prefix takes its length"):
        sweeps.run(phrase, tmp_path / "runs")  # caught by validation, not after the run started
    unknown = write(tmp_path, "base: base.yaml\ngird: {train.lr: [1]}\n", "unknown.yaml")
    with pytest.raises(PeftrunError, match="gird"):
        sweeps.run(unknown, tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_failing_run_does_not_stop_the_others_and_a_rerun_skips_done_ones(tmp_path):
    # The second point's data file does not exist: a user error at run time, not at validation.
    path = write(
        tmp_path,
        """
base: base.yaml
cases:
  - {}
  - {data: {dataset: xsum, files: {train: missing.jsonl, dev: missing.jsonl}}}
name: mixed
""",
    )
    root = tmp_path / "runs"
    result = CliRunner().invoke(app, ["sweep", str(path), "--root", str(root), "--json"])
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    states = {r["name"]: (r["state"], r["error"]) for r in summary["runs"]}
    ok, failed = summary["runs"][0]["name"], summary["runs"][1]["name"]
    assert states[ok] == ("done", None)
    assert states[failed][0] == "failed" and "does not exist" in states[failed][1]
    manifest = json.loads((root / "mixed" / "sweep.json").read_text())
    assert [p["state"] for p in manifest["points"]] == ["done", "failed"]
    assert "missing.jsonl" in manifest["sweep"]
    again = sweeps.run(path, root)
    assert [r["state"] for r in again["runs"]] == ["skipped", "failed"]
    listing = sweeps.run(path, root, dry_run=True)
    assert [r["state"] for r in listing["runs"]] == ["done", "new"]  # never created: it failed early


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    path = write(
        tmp_path,
        """
base: base.yaml
cases:
  - {data: {dataset: xsum, files: {train: missing.jsonl, dev: missing.jsonl}}}
  - {}
""",
    )
    summary = sweeps.run(path, tmp_path / "runs", workers=1, fail_fast=True)
    assert [r["state"] for r in summary["runs"]] == ["failed", "not-started"]


def test_the_slurm_path_runs_through_submitits_local_executor(tmp_path):
    path = write(
        tmp_path, "base: base.yaml\nseeds: [1, 2]\nslurm: {time: '0:10:00', mem: 4G}\nname: slurmy\n"
    )
    summary = sweeps.run(path, tmp_path / "runs", executor="slurm", cluster="local", workers=2)
    assert [r["state"] for r in summary["runs"]] == ["done", "done"]
    assert all((tmp_path / "runs" / "slurmy" / r["name"] / "DONE").is_file() for r in summary["runs"])
    assert any((tmp_path / "runs" / "slurmy" / "slurm").iterdir())  # submitit's job folder


def test_names_keep_values_apart_that_differ_only_in_punctuation(tmp_path):
    path = write(
        tmp_path, 'base: base.yaml\ngrid: {method.init_phrase: ["table-to-text:", "table-to-text"]}\n'
    )
    assert [p.name for p in sweep_file.load(path).points] == [
        "init_phrase=table-to-text_",
        "init_phrase=table-to-text",
    ]


def test_slurm_time_and_memory_parse():
    from peftrun.studies.executors import _gigabytes

    assert sweep_file.time_minutes("4:00:00") == 240 and sweep_file.time_minutes(90) == 90
    assert _gigabytes("32G") == 32 and _gigabytes("512M") == 1 and _gigabytes("2T") == 2048
    with pytest.raises(ValueError):
        sweep_file.time_minutes("four hours")


MISSING_DATA = "{data: {dataset: xsum, files: {train: missing.jsonl, dev: missing.jsonl}}}"


def test_a_failure_stops_the_rest_only_with_fail_fast(tmp_path):
    """docs/studies.md#sweeps: a failing run does not stop the others unless --fail-fast. The
    failing point comes first (one worker runs points in sweep order), so a point after it is run
    or not started."""
    path = write(tmp_path, f"base: base.yaml\ncases:\n  - {MISSING_DATA}\n  - {{}}\nname: first-fails\n")
    for flags, states in (([], ["failed", "done"]), (["--fail-fast"], ["failed", "not-started"])):
        root = tmp_path / ("fast" if flags else "runs")
        args = ["sweep", str(path), "--root", str(root), "--workers", "1", "--json", *flags]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert [r["state"] for r in json.loads(result.stdout)["runs"]] == states, flags


def test_a_rerun_resumes_incomplete_and_failed_runs_and_skips_done_ones(tmp_path):
    """docs/studies.md#sweeps: re-running a sweep skips DONE runs and resumes interrupted ones; a
    failed run is not DONE either, so it is run again (resumed from its checkpoint), never reported
    as skipped."""
    path = write(tmp_path, "base: base.yaml\nseeds: [1, 2, 3]\nname: again\n")
    root = tmp_path / "runs"
    first = sweeps.run(path, root, workers=1)
    assert [r["state"] for r in first["runs"]] == ["done"] * 3
    incomplete, failed, done = (root / "again" / r["name"] for r in first["runs"])
    (incomplete / "DONE").unlink()  # killed after its last checkpoint, before it finished
    (failed / "DONE").unlink()
    meta = json.loads((failed / "meta.json").read_text())
    (failed / "meta.json").write_text(json.dumps({**meta, "status": "failed", "error": "boom"}))
    listing = sweeps.run(path, root, dry_run=True)
    assert [r["state"] for r in listing["runs"]] == ["incomplete", "failed", "done"]
    again = sweeps.run(path, root, workers=1)
    assert [r["state"] for r in again["runs"]] == ["done", "done", "skipped"]
    assert again["counts"] == {"skipped": 1, "done": 2}
    for run_dir in (incomplete, failed):
        assert (run_dir / "DONE").is_file()
        assert len(json.loads((run_dir / "meta.json").read_text())["resumed"]) == 1  # resumed, not redone
    assert json.loads((done / "meta.json").read_text())["resumed"] == []


def test_overrides_apply_in_the_readme_order_and_the_command_line_wins(tmp_path):
    """docs/studies.md#sweeps: overrides apply in the order `set`, case, grid point, seed, command
    line; each later one wins where two set the same key. Checked on the configs the runs get, with
    conflicts."""
    path = write(
        tmp_path,
        """
base: base.yaml
set: {train.lr: 0.001, train.epochs: 2, train.warmup_steps: 1, decode.limit: 3}
cases:
  - {train.lr: 0.002, train.epochs: 3, train.seed: 5}
grid: {train.epochs: [4, 6]}
seeds: [7]
""",
    )
    cli = ["train.warmup_steps=2", "train.lr=0.25"]
    sweep = sweep_file.load(path, tmp_path / "runs", cli)
    configs = [sweeps.resolved_config(point) for point in sweep.points]
    assert [cfg.train.epochs for cfg in configs] == [4, 6]  # grid over case over set
    assert {cfg.train.seed for cfg in configs} == {7}  # seed over case
    assert {cfg.train.lr for cfg in configs} == {0.25}  # command line over case over set
    assert {cfg.train.warmup_steps for cfg in configs} == {2}  # command line over set
    assert {cfg.decode.limit for cfg in configs} == {3}  # set alone
    seed = sweep_file.load(path, tmp_path / "runs", ["train.seed=9"])
    assert {sweeps.resolved_config(point).train.seed for point in seed.points} == {9}  # over seeds


@pytest.mark.parametrize(
    "option, message",
    [
        (["--workers", "0"], "--workers 0: give at least 1"),
        (["--workers", "-2"], "--workers -2: give at least 1"),
        (["--executor", "foo"], "--executor 'foo': choose local or slurm"),
    ],
)
def test_bad_options_are_refused_before_anything_dry_run_or_not(tmp_path, option, message):
    path = write(tmp_path, "base: base.yaml\nseeds: [1, 2]\n")
    for dry_run in ([], ["--dry-run"]):
        result = CliRunner().invoke(
            app, ["sweep", str(path), "--root", str(tmp_path / "r"), *option, *dry_run]
        )
        assert result.exit_code == 2, result.output
        assert len(result.output.splitlines()) == 1, result.output  # one line, no traceback
        assert result.output.startswith(f"peftrun: error: {message}")
        assert not (tmp_path / "r").exists()


def test_a_typo_in_a_sweep_files_top_level_is_named_like_a_run_configs(tmp_path):
    """One voice: an unknown key gets "unknown key … (did you mean …?)" in a sweep file as in a run
    config, at the top level and inside `slurm:`."""
    typo = write(tmp_path, "base: base.yaml\ngird: {train.lr: [1, 2]}\n")
    result = CliRunner().invoke(app, ["sweep", str(typo), "--dry-run"])
    assert result.exit_code == 2
    assert result.output == f"peftrun: error: sweep file {typo}: unknown key 'gird' (did you mean 'grid'?)\n"
    nested = write(tmp_path, "base: base.yaml\nslurm: {partiton: gpu}\n", "nested.yaml")
    with pytest.raises(
        PeftrunError, match=r"unknown key 'slurm.partiton' \(did you mean 'slurm.partition'\?\)"
    ):
        sweeps.run(nested, tmp_path / "runs", dry_run=True)
    config = CliRunner().invoke(app, ["show", str(tmp_path / "base.yaml"), "trian.lr=1"])
    assert "unknown key 'trian' (did you mean 'train'?)" in config.output  # the run config's wording
