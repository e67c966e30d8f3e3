"""`peftrun report` on synthetic run directories with known numbers."""

from __future__ import annotations

import csv
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

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
    return json.loads(result.stdout)


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
    assert "32.0 ± 2.8 (2) †" in full


def test_csv_parses_and_has_the_numbers(study: Path, tmp_path: Path):
    out = tmp_path / "table.csv"
    result = invoke(study, "--format", "csv", "--out", out, "--samples", "200")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["method.kind"] for r in rows] == ["full", "prefix"]
    assert float(rows[1]["BLEU"]) == pytest.approx(62.0) and float(rows[1]["BLEU_std"]) == pytest.approx(2.0)
    assert rows[1]["BLEU_n"] == "3" and rows[1]["n"] == "3"
    assert rows[0]["BLEU_best_better"] == "true" and rows[1]["BLEU_best_better"] == ""
    assert rows[0]["not_finished"] == "1 failed, 1 missing"


def test_latex_is_booktabs_with_best_bold_and_small_spread(study: Path):
    text = invoke(study, "--format", "latex", "--samples", "200").stdout
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{"):
        assert rule in text
    prefix = next(line for line in text.splitlines() if line.startswith("prefix"))
    assert r"\textbf{62.0}\,{\scriptsize $\pm$\,2.0\,(3)}" in prefix
    full = next(line for line in text.splitlines() if line.startswith("full"))
    assert r"32.0$^\dagger$" in full and r"\textbf" not in full.split("&")[1]
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
            "missing",
            "split",
            "scale",
        }
        assert isinstance(row["n"], int) and len(row["runs"]) == row["n"]
        assert set(row["metrics"]) == {
            *("BLEU", "NIST", "METEOR", "ROUGE-L", "CIDEr"),
            *("trainable_pct", "stored_pct", "train_seconds", "tokens_per_s"),
        }
        for cell in row["metrics"].values():
            assert set(cell) == {"mean", "std", "values"} and len(cell["values"]) == row["n"]


def test_bleu_py_reports_the_python_variant(study: Path):
    prefix = rows_of(study, "--bleu", "py")[1]
    assert prefix["metrics"]["BLEU"]["mean"] == pytest.approx(63.0)
    assert prefix["metrics"]["NIST"]["mean"] == pytest.approx(8.72)
    assert "-p variant" in invoke(study, "--bleu", "py", "--samples", "50").stdout


def test_significance_marks_a_large_difference_and_not_identical_outputs(tmp_path: Path):
    for lr, outputs, bleu in [(1e-4, GOOD, 0.50), (2e-4, GOOD, 0.49), (3e-4, BAD, 0.20)]:
        for seed in (101, 102):
            make_run(
                tmp_path / f"lr{lr}-s{seed}",
                seed=seed,
                train={"lr": lr},
                outputs=outputs,
                scores=e2e_scores(bleu),
                per_example=meteor(0.9 if outputs is GOOD else 0.1),
            )
    best, twin, bad = rows_of(tmp_path)
    assert [r["group"]["train.lr"] for r in (best, twin, bad)] == [1e-4, 2e-4, 3e-4]
    assert best["best"] == ["BLEU", "NIST", "METEOR", "ROUGE-L", "CIDEr"]
    assert all(value is None for value in best["significance"].values())
    for metric in ("BLEU", "NIST", "METEOR", "ROUGE-L", "CIDEr"):
        assert bad["significance"][metric] == {"best_better": True, "p": 0.0, "pairs": 2}, metric
        assert twin["significance"][metric]["best_better"] is False, metric  # identical outputs
        assert twin["significance"][metric]["p"] == 1.0
    text = invoke(tmp_path, "--samples", "200").stdout
    assert "paired bootstrap" in text and "p ≤ 0.05" in text
    twin_line = next(line for line in text.splitlines() if line.startswith("| 0.0002"))
    assert "†" not in twin_line
    assert next(line for line in text.splitlines() if line.startswith("| 0.0003")).count("†") == 5


def test_pairs_only_the_seeds_both_rows_have(tmp_path: Path):
    make_run(tmp_path / "a1", seed=1, scores=e2e_scores(0.5), per_example=meteor(0.9))
    make_run(tmp_path / "a2", seed=2, scores=e2e_scores(0.5), per_example=meteor(0.9))
    make_run(tmp_path / "b2", seed=2, train={"lr": 1.0}, outputs=BAD, scores=e2e_scores(0.1))
    make_run(tmp_path / "b3", seed=3, train={"lr": 1.0}, outputs=BAD, scores=e2e_scores(0.1))
    _, other = rows_of(tmp_path)
    assert other["significance"]["BLEU"]["pairs"] == 1
    assert other["significance"]["METEOR"] == {"best_better": False, "p": None, "pairs": 1}  # b has none


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
    assert full["significance"]["ROUGE-2"] == {"best_better": True, "p": 0.0, "pairs": 2}
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
    # README: a cell is the mean over the row's *finished* runs; failed and incomplete runs are
    # counted in "not finished", never averaged, even when they wrote metrics before stopping.
    for seed, bleu in [(1, 0.60), (2, 0.62)]:
        make_run(tmp_path / f"a{seed}", seed=seed, scores=e2e_scores(bleu), per_example=meteor(0.9))
    make_run(
        tmp_path / "a3", seed=3, scores=e2e_scores(0.10), outputs=BAD, per_example=meteor(0.1),
        status=status, error="stopped while decoding dev", scored=True,
    )  # fmt: skip
    for seed in (1, 2, 3):
        make_run(tmp_path / f"b{seed}", seed=seed, train={"lr": 1.0}, scores=e2e_scores(0.3), outputs=BAD)
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
# README: runs of two rows are paired by (train.seed, data.subset_seed), the pairs' instances
# pooled into one sample; † when best − row > 0 in ≥ 95% of the resamples (p ≤ 0.05).
# XSum rows are tested on stored per-instance scores, so the scores are chosen freely here.

ROUGE = ("ROUGE-1", "ROUGE-2", "ROUGE-L")


def xsum_run(path: Path, scores: list[float], **kwargs) -> Path:
    per = {m: list(scores) for m in ROUGE}
    means = {m: statistics.fmean(scores) for m in ROUGE}
    return make_run(path, data={"dataset": "xsum", **kwargs.pop("data", {})}, scores=means, per_example=per,
                    **kwargs)  # fmt: skip


def xsum_pooled_p(a: list[float], b: list[float], samples: int) -> float:
    """One-sided p of B > A on a hand-pooled sample: the bootstrap the README names."""
    from peftrun.metrics.bootstrap import paired_bootstrap_means

    return 1.0 - paired_bootstrap_means({"R": a}, {"R": b}, samples=samples, seed=0)["R"].b_better


def test_dagger_threshold_is_p_at_most_0_05_with_p_strictly_between_0_and_1(tmp_path: Path):
    # The best row against four worse rows whose per-instance gaps are the same noise pattern
    # shifted by 1.5, 1.25, 1.2 and 0.6: p lands at 0.01, exactly 0.05 (190 of 200 resamples
    # better), 0.06 and 0.265 (200 resamples, seed 0).
    n = 24
    best = [40.0 + i % 5 for i in range(n)]
    noise = [(i * 7) % 11 - 5 for i in range(n)]
    xsum_run(tmp_path / "best", best, seed=1, train={"lr": 1e-4})
    shifts = {2e-4: 1.5, 3e-4: 1.25, 4e-4: 1.2, 5e-4: 0.6}

    def worse_by(shift: float) -> list[float]:
        return [b - shift - e for b, e in zip(best, noise, strict=True)]

    for lr, shift in shifts.items():
        xsum_run(tmp_path / f"lr{lr}", worse_by(shift), seed=1, train={"lr": lr})
    rows = {row["group"]["train.lr"]: row for row in rows_of(tmp_path)}
    assert rows[1e-4]["best"] == list(ROUGE)
    for lr, shift in shifts.items():
        expected = xsum_pooled_p(worse_by(shift), best, 200)
        for metric in ROUGE:
            sig = rows[lr]["significance"][metric]
            assert sig["p"] == pytest.approx(expected, abs=1e-12) and sig["pairs"] == 1
    p = {lr: rows[lr]["significance"]["ROUGE-1"]["p"] for lr in shifts}
    assert 0 < p[2e-4] < 0.05 < p[4e-4] < p[5e-4] < 1  # the data spans the threshold
    assert p[3e-4] == pytest.approx(0.05, abs=1e-12)  # on it: p <= 0.05 includes it
    flags = [rows[lr]["significance"]["ROUGE-1"]["best_better"] for lr in shifts]
    assert flags == [True, True, False, False]
    text = invoke(tmp_path, "--samples", "200").stdout
    daggers = {line.split(" | ")[0]: line.count("†") for line in text.splitlines() if line.startswith("| 0.")}
    assert daggers == {"| 0.0001": 0, "| 0.0002": 3, "| 0.0003": 3, "| 0.0004": 0, "| 0.0005": 0}


def test_runs_are_paired_on_train_seed_and_subset_seed(tmp_path: Path):
    # Same train.seed, two data subsets: on subset 1 both rows score near 80, on subset 2 near 10,
    # and the best row is 1 point better on every instance of both. Paired by subset, every
    # difference is +1 (p = 0); paired across subsets they are ±70 (no significance).
    n = 24
    high = [80.0 + (i * 5) % 7 for i in range(n)]
    low = [10.0 + (i * 3) % 5 for i in range(n)]
    subset = {1: high, 2: low}
    # Folder names sort against subset order in one row, so that pairing on train.seed alone
    # (k-th run with that seed, in path order) would pair subset 1 with subset 2.
    for name, subset_seed in [("best-x", 1), ("best-y", 2)]:
        xsum_run(tmp_path / name, [s + 1 for s in subset[subset_seed]], data={"subset_seed": subset_seed})
    # A subset only the worse row ran (0, on its own: unpaired): pairing on train.seed alone would
    # pair it, and shift every later pair, in either run order.
    subset[0] = [45.0] * n
    for name, subset_seed in [("worse-x", 2), ("worse-y", 1), ("worse-z", 0)]:
        xsum_run(tmp_path / name, subset[subset_seed], data={"subset_seed": subset_seed},
                 method={"kind": "full"})  # fmt: skip
    worse, best = rows_of(tmp_path)
    assert best["group"] == {"method.kind": "prefix"} and best["best"] == list(ROUGE)
    for metric in ROUGE:
        assert worse["significance"][metric] == {"best_better": True, "p": 0.0, "pairs": 2}, metric


def test_every_seed_pair_is_pooled_xsum(tmp_path: Path):
    # Seeds 1 and 2: the best row is 1 better on every instance; seed 3 (the last pair): equal.
    # Pooled over the three pairs p = 0; the last pair alone would give p = 1.
    n = 12
    scores = {seed: [30.0 + (i * seed) % 7 for i in range(n)] for seed in (1, 2, 3)}
    for seed, worse in scores.items():
        xsum_run(tmp_path / f"best{seed}", [w + (seed != 3) for w in worse], seed=seed)
        xsum_run(tmp_path / f"worse{seed}", worse, seed=seed, method={"kind": "full"})
    pooled_a = [x for seed in (1, 2, 3) for x in scores[seed]]
    pooled_b = [x + (seed != 3) for seed in (1, 2, 3) for x in scores[seed]]
    expected = xsum_pooled_p(pooled_a, pooled_b, 200)
    assert expected < 0.05 and xsum_pooled_p(scores[3], scores[3], 200) == 1.0
    worse, _ = rows_of(tmp_path)
    for metric in ROUGE:
        assert worse["significance"][metric] == {"best_better": True, "p": expected, "pairs": 3}, metric


def test_every_seed_pair_is_pooled_e2e(tmp_path: Path):
    # E2E: outputs and references of all pairs are pooled and re-scored. Seeds 1 and 2: the best
    # row's outputs are references, the other's are not; seed 3 (the last pair): identical outputs.
    from peftrun.metrics.bootstrap import paired_bootstrap, paired_bootstrap_means

    worse_outputs = {1: BAD, 2: BAD, 3: GOOD}
    for seed, outputs in worse_outputs.items():
        better = e2e_scores(0.6, METEOR=0.5, ROUGE_L=0.8, CIDEr=2.6)  # the best row's means
        make_run(tmp_path / f"best{seed}", seed=seed, scores=better, per_example=meteor(0.9))
        make_run(
            tmp_path / f"worse{seed}", seed=seed, method={"kind": "full"}, scores=e2e_scores(0.4),
            outputs=outputs, per_example=meteor(0.9 if outputs is GOOD else 0.1),
        )  # fmt: skip
    refs = [inst["references"] for inst in INSTANCES] * 3
    hyps_a = [h for seed in (1, 2, 3) for h in worse_outputs[seed]]
    corpus = ("BLEU", "NIST", "ROUGE_L", "CIDEr")
    expected = {
        m: 1.0 - r.b_better
        for m, r in paired_bootstrap(hyps_a, GOOD * 3, refs, samples=200, seed=0, metrics=corpus).items()
    }
    meteor_a = [0.9 if worse_outputs[seed] is GOOD else 0.1 for seed in (1, 2, 3) for _ in INSTANCES]
    met = paired_bootstrap_means({"M": meteor_a}, {"M": [0.9] * len(meteor_a)}, samples=200, seed=0)["M"]
    expected["METEOR"] = 1.0 - met.b_better
    worse, _ = rows_of(tmp_path)
    for name, source in [("BLEU", "BLEU"), ("NIST", "NIST"), ("ROUGE-L", "ROUGE_L"), ("CIDEr", "CIDEr"),
                         ("METEOR", "METEOR")]:  # fmt: skip
        assert expected[source] < 0.05, source
        assert worse["significance"][name] == {"best_better": True, "p": expected[source], "pairs": 3}, name
