"""`peftrun report` on synthetic run directories with known numbers."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from report_helpers import BAD, GOOD, INSTANCES, e2e_scores, make_run, meteor, write_manifest
from typer.testing import CliRunner

from peftrun.cli import app
from peftrun.studies import report as reports

runner = CliRunner()
PREFIX = {"kind": "prefix", "prefix_len": 5}


def invoke(*args: str):
    return runner.invoke(app, ["report", *map(str, args)])


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A sweep: prefix (3 seeds, good outputs) vs full (2 done, 1 failed, 1 never started)."""
    base = tmp_path / "base.yaml"
    base.write_text("method: {kind: prefix, prefix_len: 5}\n", encoding="utf-8")
    folder = tmp_path / "runs" / "cmp"
    points = []
    for seed, bleu, seconds in [(101, 0.60, 100.0), (102, 0.62, 110.0), (103, 0.64, 120.0)]:
        name = f"kind=prefix-seed{seed}"
        make_run(
            folder / name, seed=seed, scores=e2e_scores(bleu), per_example=meteor(0.9), train_seconds=seconds
        )
        points.append({"name": name, "run_dir": f"elsewhere/cmp/{name}", "base": str(base), "state": "done"})
    full = {"kind": "full"}
    for seed, bleu in [(101, 0.30), (102, 0.34)]:
        name = f"kind=full-seed{seed}"
        make_run(
            folder / name,
            method=full,
            seed=seed,
            scores=e2e_scores(bleu),
            outputs=BAD,
            per_example=meteor(0.1),
            params=(100.0, 100.0),
        )
        points.append({"name": name, "run_dir": str(folder / name), "base": str(base), "state": "done"})
    make_run(folder / "kind=full-seed103", method=full, seed=103, status="failed", error="CUDA out of memory")
    points.append({"name": "kind=full-seed103", "run_dir": "x", "base": str(base), "state": "failed"})
    overrides = ['method={"kind": "full"}', "train.seed=104"]
    points.append(
        {
            "name": "kind=full-seed104",
            "run_dir": "x",
            "base": str(base),
            "overrides": overrides,
            "state": "new",
        }
    )
    write_manifest(folder, points)
    return tmp_path / "runs"


def rows_of(*args) -> list[dict]:
    result = invoke(*args, "--format", "json", "--samples", "200")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["rows"]


def test_groups_by_what_varies_and_collapses_seeds(study: Path):
    rows = rows_of(study)
    assert [row["group"] for row in rows] == [{"method.kind": "full"}, {"method.kind": "prefix"}]
    full, prefix = rows
    assert prefix["n"] == 3 and full["n"] == 2
    bleu = prefix["metrics"]["BLEU"]
    assert bleu["values"] == pytest.approx([60.0, 62.0, 64.0])  # print scale: ×100
    assert bleu["mean"] == pytest.approx(62.0)
    assert bleu["std"] == pytest.approx(statistics.stdev([60.0, 62.0, 64.0]))
    assert prefix["metrics"]["NIST"]["mean"] == pytest.approx(8.62)  # raw
    assert prefix["metrics"]["CIDEr"]["mean"] == pytest.approx(2.4)
    assert prefix["metrics"]["train_seconds"]["mean"] == pytest.approx(110.0)
    assert prefix["metrics"]["stored_pct"] == {
        "mean": pytest.approx(0.069),
        "std": 0.0,
        "values": [0.069] * 3,
    }
    assert full["metrics"]["BLEU"]["std"] == pytest.approx(statistics.stdev([30.0, 34.0]))
    assert prefix["scale"]["BLEU"] == 100.0 and prefix["scale"]["NIST"] == 1.0


def test_missing_and_failed_runs_are_shown(study: Path):
    full = rows_of(study)[0]
    states = {Path(m["run_dir"]).name: m["state"] for m in full["missing"]}
    assert states == {"kind=full-seed103": "failed", "kind=full-seed104": "missing"}
    result = invoke(study, "--samples", "200")
    assert result.exit_code == 0, result.output
    assert "1 failed, 1 missing" in result.stdout
    assert "CUDA out of memory" in result.stdout
    assert "sweep.json says new" in result.stdout


def test_varied_keys_drop_keys_that_restate_others(study: Path):
    records = reports.collect([study], "test")
    assert reports.varied_keys(records) == ["method.kind"]  # not method.prefix_len, train.seed


def test_by_a_key_pools_the_others(tmp_path: Path):
    for size in (50, 100):
        for lr in (1e-4, 2e-4):
            make_run(
                tmp_path / f"n{size}-lr{lr}",
                data={"train_size": size, "subset_seed": 1},
                train={"lr": lr},
                scores=e2e_scores(size / 1000 + lr * 100),
            )
    assert [len(r["group"]) for r in rows_of(tmp_path)] == [2, 2, 2, 2]
    rows = rows_of(tmp_path, "--by", "train_size")  # the unique last part of data.train_size
    assert [(r["group"], r["n"]) for r in rows] == [
        ({"data.train_size": 50}, 2),
        ({"data.train_size": 100}, 2),
    ]
    assert rows[0]["metrics"]["BLEU"]["values"] == pytest.approx([6.0, 7.0])
    result = invoke(tmp_path, "--by", "train.seed")
    assert result.exit_code == 2 and "seeds are collapsed" in result.output
    result = invoke(tmp_path, "--by", "nonsense")
    assert result.exit_code == 2 and "not a config key" in result.output


def test_no_finished_runs_is_an_error(tmp_path: Path):
    make_run(tmp_path / "a", status="failed", error="boom")
    make_run(tmp_path / "b", status="running")
    result = invoke(tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith("peftrun: error: no finished runs with test metrics under")
    assert "1 failed, 1 incomplete" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke(empty)
    assert result.exit_code == 2 and "no run directories" in result.output


def test_markdown_cells_are_mean_std_n_with_best_bold(study: Path):
    text = invoke(study, "--samples", "200").stdout
    assert "Mean ± sample std (n runs)" in text and "BLEU, METEOR, ROUGE-L ×100" in text
    header = next(line for line in text.splitlines() if line.startswith("| method.kind"))
    assert header.split(" | ")[1:6] == ["BLEU", "NIST", "METEOR", "ROUGE-L", "CIDEr"]
    prefix = next(line for line in text.splitlines() if line.startswith("| prefix"))
    assert "**62.0 ± 2.0** (3)" in prefix
    full = next(line for line in text.splitlines() if line.startswith("| full"))
    assert "32.0 ± 2.8 (2) p=0.010†" in full  # two-sided p shown: 2 (0 + 1) / (200 + 1)
    assert "two-level paired bootstrap" in text and "two-sided" in text and "Holm" in text
    assert "primary metric (BLEU)" in text and "below 4 seed pairs" in text


def test_csv_parses_and_has_the_numbers(study: Path, tmp_path: Path):
    out = tmp_path / "table.csv"
    result = invoke(study, "--format", "csv", "--out", out, "--samples", "200")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["method.kind"] for r in rows] == ["full", "prefix"]
    assert float(rows[1]["BLEU"]) == pytest.approx(62.0) and float(rows[1]["BLEU_std"]) == pytest.approx(2.0)
    assert rows[1]["BLEU_n"] == "3" and rows[1]["n"] == "3"
    assert rows[0]["BLEU_best_better"] == "true" and rows[1]["BLEU_best_better"] == ""
    assert rows[0]["BLEU_instances"] == "12" and rows[0]["BLEU_seed_pairs"] == "2"
    assert rows[1]["BLEU_instances"] == "" and rows[1]["BLEU_seed_pairs"] == ""  # the best row
    assert rows[0]["not_finished"] == "1 failed, 1 missing"


def test_latex_is_booktabs_with_best_bold_and_small_spread(study: Path):
    text = invoke(study, "--format", "latex", "--samples", "200").stdout
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{"):
        assert rule in text
    prefix = next(line for line in text.splitlines() if line.startswith("prefix"))
    assert r"\textbf{62.0}\,{\scriptsize $\pm$\,2.0\,(3)}" in prefix
    full = next(line for line in text.splitlines() if line.startswith("full"))
    assert r"32.0$^\dagger$" in full and r"\textbf" not in full.split("&")[1]
    assert r"(2)\,p=0.010}" in full
    assert r"trainable \%" in text and r"$\geq$" in text  # escaped, no raw unicode in the caption


def test_json_rows_have_the_documented_shape(study: Path):
    for row in rows_of(study):
        assert set(row) == {
            "group",
            "n",
            "runs",
            "metrics",
            "best",
            "significance",
            "identical_runs",
            "missing",
            "split",
            "scale",
        }
        for sig in row["significance"].values():
            assert sig is None or set(sig) == {
                *("best_better", "p", "p_raw", "delta", "ci", "instances", "seed_pairs", "pairs"),
                "seeds_resampled",
            }
        assert isinstance(row["n"], int) and len(row["runs"]) == row["n"]
        known = {
            *("BLEU", "NIST", "METEOR", "ROUGE-L", "CIDEr"),
            *("trainable_pct", "stored_pct", "train_seconds", "tokens_per_s"),
        }
        assert set(row["metrics"]) >= known
        for name, cell in row["metrics"].items():
            assert set(cell) == {"mean", "std", "values"}
            assert name not in known or len(cell["values"]) == row["n"]


def test_bleu_py_reports_the_python_variant(study: Path):
    prefix = rows_of(study, "--bleu", "py")[1]
    assert prefix["metrics"]["BLEU"]["mean"] == pytest.approx(63.0)
    assert prefix["metrics"]["NIST"]["mean"] == pytest.approx(8.72)
    assert "-p variant" in invoke(study, "--bleu", "py", "--samples", "50").stdout


def test_xsum_rouge_is_tested_on_stored_instance_scores(tmp_path: Path):
    n = len(INSTANCES)
    for kind, level in [("prefix", 40.0), ("full", 20.0)]:
        for seed in (1, 2):
            per = {m: [level + (i % 3) for i in range(n)] for m in ("ROUGE-1", "ROUGE-2", "ROUGE-L")}
            scores = {m: statistics.fmean(v) for m, v in per.items()}
            method = PREFIX if kind == "prefix" else {"kind": "full"}
            make_run(
                tmp_path / f"{kind}{seed}", method=method, seed=seed, data={"dataset": "xsum"}, scores=scores,
                per_example=per,
            )  # fmt: skip
    full, prefix = rows_of(tmp_path)
    assert set(prefix["metrics"]) >= {"ROUGE-1", "ROUGE-2", "ROUGE-L"} and "BLEU" not in prefix["metrics"]
    assert prefix["metrics"]["ROUGE-1"]["mean"] == pytest.approx(41.0)  # as stored, not ×100
    sig = full["significance"]["ROUGE-2"]
    assert sig["best_better"] and sig["delta"] == pytest.approx(20.0) and sig["instances"] == n
    assert "ROUGE F1 ×100" in invoke(tmp_path, "--samples", "50").stdout


def test_mixed_datasets_and_bad_options_are_one_line_errors(tmp_path: Path):
    make_run(tmp_path / "e", scores=e2e_scores(0.5))
    assert "choose md, csv, latex or json" in invoke(tmp_path, "--format", "html").output
    assert "choose perl" in invoke(tmp_path, "--bleu", "sacre").output
    assert "does not exist" in invoke(tmp_path / "nope").output
    make_run(tmp_path / "x", data={"dataset": "xsum"}, scores={"ROUGE-1": 40.0})
    result = invoke(tmp_path)
    assert result.exit_code == 2 and "several datasets" in result.output


def test_report_imports_neither_torch_nor_matplotlib(study: Path):
    code = (
        "import sys; from typer.testing import CliRunner; from peftrun.cli import app; "
        f"r = CliRunner().invoke(app, ['report', {str(study)!r}, '--samples', '20']); "
        "print(r.exit_code, 'torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False", "False"]


def test_report_has_help():
    result = invoke("--help")
    assert result.exit_code == 0 and "--by" in result.output and "--plots" in result.output


def test_a_point_whose_base_is_gone_still_lands_in_its_row(study: Path):
    folder = study / "cmp"
    manifest = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    manifest["points"].append(
        {"name": "gone", "run_dir": "gone", "base": "/nonexistent.yaml", "state": "new", "overrides": [],
         "values": {"method": {"kind": "full"}, "train.seed": 105}}
    )  # fmt: skip
    (folder / "sweep.json").write_text(json.dumps(manifest), encoding="utf-8")
    rows = rows_of(study)
    assert [row["group"] for row in rows] == [{"method.kind": "full"}, {"method.kind": "prefix"}]
    assert "gone" in {Path(m["run_dir"]).name for m in rows[0]["missing"]}


def test_plots_without_matplotlib_say_how_to_install_it(study: Path, monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    result = invoke(study, "--plots", tmp_path / "figures", "--samples", "20")
    assert result.exit_code == 2
    assert result.output.strip() == "peftrun: error: --plots needs matplotlib: pip install matplotlib"


# --------------------------------------------------------------------------- what a cell averages


@pytest.mark.parametrize("status", ["failed", "incomplete"])
def test_a_run_that_stopped_after_writing_scores_is_never_averaged(tmp_path: Path, status: str):
    # docs/studies.md#reports: a cell is the mean over the row's *finished* runs; failed and
    # incomplete runs are counted in "not finished", never averaged, even when they wrote metrics
    # before stopping.
    for seed, bleu in [(1, 0.60), (2, 0.62)]:
        make_run(tmp_path / f"a{seed}", seed=seed, scores=e2e_scores(bleu), per_example=meteor(0.9))
    make_run(
        tmp_path / "a3", seed=3, scores=e2e_scores(0.10), outputs=BAD, per_example=meteor(0.1),
        status=status, error="stopped while decoding dev", scored=True,
    )  # fmt: skip
    for seed in (1, 2, 3):
        make_run(tmp_path / f"b{seed}", seed=seed, train={"lr": 1.0}, scores=e2e_scores(0.3 + seed / 100),
                 outputs=BAD)  # fmt: skip
    stopped, other = rows_of(tmp_path)
    assert stopped["group"] == {"train.lr": 5e-05} and other["group"] == {"train.lr": 1.0}
    assert stopped["n"] == 2 and [Path(r).name for r in stopped["runs"]] == ["a1", "a2"]
    assert stopped["metrics"]["BLEU"]["values"] == pytest.approx([60.0, 62.0])
    assert stopped["metrics"]["METEOR"]["values"] == pytest.approx([45.0, 45.0])
    assert [(Path(m["run_dir"]).name, m["state"]) for m in stopped["missing"]] == [("a3", status)]
    # Nor paired in the significance test: seeds 1 and 2 only.
    assert other["significance"]["BLEU"]["pairs"] == 2


# --------------------------------------------------------------------------- significance
#
# docs/studies.md#significance, docs/design.md#significance: runs of two rows are paired by (train.seed,
# data.subset_seed); a two-level paired bootstrap resamples instances (clusters: every seed's output
# of an instance together) and seed pairs; p is two-sided; the primary metric's p as is, the other
# metrics' Holm-adjusted per row; † at p <= 0.05. XSum rows are tested on stored per-instance
# scores, so the scores are chosen freely here.

ROUGE = ("ROUGE-1", "ROUGE-2", "ROUGE-L")


def xsum_run(path: Path, scores: list[float], **kwargs) -> Path:
    per = {m: list(scores) for m in ROUGE}
    means = {m: statistics.fmean(scores) for m in ROUGE}
    return make_run(path, data={"dataset": "xsum", **kwargs.pop("data", {})}, scores=means, per_example=per,
                    **kwargs)  # fmt: skip


def test_holm_on_known_values():
    from peftrun.studies.significance import holm

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    assert holm([0.4, 0.9, 0.5]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1, monotone
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_two_sided_p_doubles_the_one_sided_one(tmp_path: Path):
    # One seed pair; the best row's per-instance gap is a noise pattern shifted by 1.35: B − A <= 0
    # in 3.0% of 1000 resamples (one-sided p 0.030, which the old test marked †), two-sided p 0.062.
    n = 24
    best = [40.0 + i % 5 for i in range(n)]
    worse = [b - 1.35 - ((i * 7) % 11 - 5) for i, b in enumerate(best)]
    xsum_run(tmp_path / "best", best, seed=1, train={"lr": 1e-4})
    xsum_run(tmp_path / "worse", worse, seed=1, train={"lr": 2e-4})
    from peftrun.metrics.bootstrap import paired_bootstrap_means

    one = paired_bootstrap_means({"R": worse}, {"R": best}, samples=1000, seed=0)["R"]
    assert 1.0 - one.b_better == pytest.approx(0.030)
    result = invoke(tmp_path, "--format", "json", "--samples", "1000")
    _, row = json.loads(result.stdout)["rows"]
    sig = row["significance"]["ROUGE-2"]  # the primary metric: p as is
    assert sig["p"] == sig["p_raw"] == pytest.approx(2 * 31 / 1001)
    assert sig["best_better"] is False and sig["seed_pairs"] == 1 and sig["seeds_resampled"] is False
    text = invoke(tmp_path, "--samples", "1000").stdout
    line = next(line for line in text.splitlines() if line.startswith("| 0.0002"))
    assert "p=0.062" in line and "†" not in line
    assert "3 comparison(s) rest on one seed pair: the instance-level test" in text


def test_seeds_that_disagree_are_not_significant(tmp_path: Path):
    # Seed 1: the best row is 10-12 points ahead on every instance; seed 2: 8-10 behind. The old
    # test pooled the 2 × 200 (seed, instance) items as independent: one-sided p 0.015, †. Two
    # levels: half of the resamples draw seed 2 twice, p ~ 0.5.
    n = 200
    worse = {1: [30.0 + (i * 3) % 7 for i in range(n)], 2: [30.0 + (i * 5) % 7 for i in range(n)]}
    best = {
        1: [x + 10 + i % 3 for i, x in enumerate(worse[1])],
        2: [x - 8 - i % 3 for i, x in enumerate(worse[2])],
    }
    for seed in (1, 2):
        xsum_run(tmp_path / f"best{seed}", best[seed], seed=seed)
        xsum_run(tmp_path / f"worse{seed}", worse[seed], seed=seed, method={"kind": "full"})
    from peftrun.metrics.bootstrap import paired_bootstrap_means

    pooled = paired_bootstrap_means({"R": worse[1] + worse[2]}, {"R": best[1] + best[2]}, samples=200, seed=0)
    assert 1.0 - pooled["R"].b_better < 0.05  # significant under the old pooling
    row, top = rows_of(tmp_path)
    assert top["best"] == list(ROUGE)
    for metric in ROUGE:
        sig = row["significance"][metric]
        assert sig["p_raw"] > 0.4 and sig["best_better"] is False, metric
        assert sig["seed_pairs"] == 2 and sig["instances"] == n and sig["seeds_resampled"] is True
        assert sig["delta"] == pytest.approx(1.0) and sig["ci"][0] < 0 < sig["ci"][1]


def test_identical_runs_count_once_and_pair_with_every_seed(tmp_path: Path):
    # The frozen base decoding greedily: the same run under three seeds. One run (n = 1, no
    # "± 0.0 (3)"), entered once in the bootstrap and paired with each of the other row's seeds.
    from peftrun.metrics.bootstrap import two_level
    from peftrun.studies import significance

    n = 12
    base = [20.0 + i % 4 for i in range(n)]
    trained = {seed: [30.0 + (i * seed) % 5 for i in range(n)] for seed in (1, 2, 3)}
    for seed in (1, 2, 3):
        xsum_run(tmp_path / f"base{seed}", base, seed=seed, method={"kind": "full"})
        xsum_run(tmp_path / f"trained{seed}", trained[seed], seed=seed)
    xsum_run(tmp_path / "trained9", trained[1][::-1], seed=9)  # a seed the base row never ran
    rows = rows_of(tmp_path)
    frozen, other = rows
    assert frozen["group"]["method.kind"] == "full"
    assert frozen["n"] == 1 and len(frozen["runs"]) == 1 and len(frozen["identical_runs"]) == 2
    assert frozen["metrics"]["ROUGE-1"]["values"] == [pytest.approx(21.5)]
    assert frozen["metrics"]["ROUGE-1"]["std"] is None
    assert other["n"] == 4 and frozen["significance"]["ROUGE-1"]["seed_pairs"] == 4
    expected = two_level([base] * 4, [*trained.values(), trained[1][::-1]], "ROUGE-1", samples=200, seed=0)
    assert frozen["significance"]["ROUGE-2"]["p"] == pytest.approx(expected.p)
    assert frozen["significance"]["ROUGE-2"]["delta"] == pytest.approx(expected.delta)
    report = reports.build([tmp_path], samples=200)
    result = significance.compare_rows(report.rows[0], report.rows[1], report)["ROUGE-1"]
    assert np.array_equal(result.deltas, expected.deltas) and result.seed_pairs == 4
    text = invoke(tmp_path, "--samples", "200").stdout
    line = next(line for line in text.splitlines() if line.startswith("| full"))
    assert "21.50 (1) p=" in line and "± 0.00" not in line


def test_runs_are_paired_on_train_seed_and_subset_seed(tmp_path: Path):
    # Same train.seed, two data subsets: on subset 1 both rows score near 80, on subset 2 near 10,
    # and the best row is 1 point better on every instance of both. Paired by subset, every
    # difference is +1; paired across subsets they are ±70 (no significance).
    n = 24
    high = [80.0 + (i * 5) % 7 for i in range(n)]
    low = [10.0 + (i * 3) % 5 for i in range(n)]
    subset = {1: high, 2: low}
    # Folder names sort against subset order in one row, so that pairing on train.seed alone
    # (k-th run with that seed, in path order) would pair subset 1 with subset 2.
    for name, subset_seed in [("best-x", 1), ("best-y", 2)]:
        xsum_run(tmp_path / name, [s + 1 for s in subset[subset_seed]], data={"subset_seed": subset_seed})
    subset[0] = [45.0] * n  # a subset only the worse row ran: unpaired
    for name, subset_seed in [("worse-x", 2), ("worse-y", 1), ("worse-z", 0)]:
        xsum_run(tmp_path / name, subset[subset_seed], data={"subset_seed": subset_seed},
                 method={"kind": "full"})  # fmt: skip
    worse, best = rows_of(tmp_path)
    assert best["group"] == {"method.kind": "prefix"} and best["best"] == list(ROUGE)
    for metric in ROUGE:
        sig = worse["significance"][metric]
        assert sig["best_better"] and sig["seed_pairs"] == 2 and sig["delta"] == pytest.approx(1.0)
        assert sig["ci"] == pytest.approx([1.0, 1.0]) and sig["p_raw"] == pytest.approx(2 / 201)


def test_pairs_only_the_seeds_both_rows_have(tmp_path: Path):
    make_run(tmp_path / "a1", seed=1, scores=e2e_scores(0.5), per_example=meteor(0.9))
    make_run(tmp_path / "a2", seed=2, scores=e2e_scores(0.51), per_example=meteor(0.9))
    make_run(tmp_path / "b2", seed=2, train={"lr": 1.0}, outputs=BAD, scores=e2e_scores(0.1))
    make_run(tmp_path / "b3", seed=3, train={"lr": 1.0}, outputs=BAD, scores=e2e_scores(0.11))
    _, other = rows_of(tmp_path)
    assert other["significance"]["BLEU"]["seed_pairs"] == other["significance"]["BLEU"]["pairs"] == 1
    assert other["significance"]["BLEU"]["instances"] == len(INSTANCES)
    assert other["significance"]["METEOR"]["p"] is None  # b has no METEOR segments: no test
    assert other["significance"]["METEOR"]["best_better"] is False


def test_primary_metric_as_is_others_holm_adjusted(tmp_path: Path):
    # XSum: ROUGE-2 is primary; ROUGE-1 and ROUGE-L of a row are Holm-adjusted between them.
    from peftrun.studies.significance import PRIMARY_METRIC, holm

    assert PRIMARY_METRIC == {"e2e": "BLEU", "xsum": "ROUGE-2"}
    n = 24
    best = [40.0 + i % 5 for i in range(n)]
    gaps = {"ROUGE-1": 1.5, "ROUGE-2": 1.4, "ROUGE-L": 1.35}
    noise = [(i * 7) % 11 - 5 for i in range(n)]
    per = {m: [b - gap - e for b, e in zip(best, noise, strict=True)] for m, gap in gaps.items()}
    make_run(tmp_path / "best", seed=1, data={"dataset": "xsum"}, per_example={m: best for m in ROUGE},
             scores={m: statistics.fmean(best) for m in ROUGE})  # fmt: skip
    make_run(tmp_path / "worse", seed=1, data={"dataset": "xsum"}, train={"lr": 1.0}, per_example=per,
             scores={m: statistics.fmean(v) for m, v in per.items()})  # fmt: skip
    result = invoke(tmp_path, "--format", "json", "--samples", "1000")
    worse = next(row for row in json.loads(result.stdout)["rows"] if row["group"]["train.lr"] == 1.0)
    sig = worse["significance"]
    assert sig["ROUGE-2"]["p"] == sig["ROUGE-2"]["p_raw"] < 0.05 and sig["ROUGE-2"]["best_better"]
    raw = [sig["ROUGE-1"]["p_raw"], sig["ROUGE-L"]["p_raw"]]
    assert [sig["ROUGE-1"]["p"], sig["ROUGE-L"]["p"]] == pytest.approx(holm(raw))
    assert raw[0] < 0.05 and raw[0] < sig["ROUGE-1"]["p"]  # adjusted upwards
    assert sig["ROUGE-1"]["best_better"] == (sig["ROUGE-1"]["p"] <= 0.05)


def test_e2e_corpus_metrics_are_re_scored_per_run_and_seed_pair(tmp_path: Path):
    # E2E: BLEU/NIST from each run's predictions (the corpus formula per seed pair), METEOR from
    # the stored segment scores; instances shared across seeds (clusters).
    from peftrun.metrics.bootstrap import instance_statistics, two_level

    worse_outputs = {1: BAD, 2: [g if i % 2 else b for i, (g, b) in enumerate(zip(GOOD, BAD, strict=True))]}
    refs = [inst["references"] for inst in INSTANCES]
    for seed, outputs in worse_outputs.items():
        better = e2e_scores(0.6 + seed / 100)
        make_run(tmp_path / f"best{seed}", seed=seed, scores=better, per_example=meteor(0.9))
        make_run(
            tmp_path / f"worse{seed}", seed=seed, method={"kind": "full"}, scores=e2e_scores(0.4, METEOR=0.3),
            outputs=outputs, per_example=meteor(0.1 * seed),
        )  # fmt: skip
    worse, _ = rows_of(tmp_path)
    for name, source in [("BLEU", "BLEU"), ("NIST", "NIST")]:
        a = [instance_statistics(worse_outputs[s], refs, [source])[source] for s in (1, 2)]
        b = [instance_statistics(GOOD, refs, [source])[source]] * 2
        expected = two_level(a, b, source, samples=200, seed=0)
        scale = 100.0 if name == "BLEU" else 1.0
        sig = worse["significance"][name]
        assert sig["p_raw"] == pytest.approx(expected.p)
        assert sig["delta"] == pytest.approx(expected.delta * scale)
        assert sig["instances"] == len(INSTANCES) and sig["seed_pairs"] == 2
    expected = two_level([[0.1] * 12, [0.2] * 12], [[0.9] * 12] * 2, "METEOR", samples=200, seed=0)
    assert worse["significance"]["METEOR"]["delta"] == pytest.approx(75.0)
    assert worse["significance"]["METEOR"]["p_raw"] == pytest.approx(expected.p)
