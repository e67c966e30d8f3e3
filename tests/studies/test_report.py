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
