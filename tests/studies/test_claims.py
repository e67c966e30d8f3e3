"""Claims declared in a sweep file before its runs, and the verdicts the report computes for them:
held / reversed / inconclusive for a direction, near-parity within δ, and a trend over an ordered key;
Holm across a claim's metrics; a side matching no row or several rows is a one-line error."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from report_helpers import INSTANCES, make_run, write_manifest
from typer.testing import CliRunner

from peftrun.cli import app
from peftrun.errors import PeftrunError
from peftrun.studies import claims
from peftrun.studies import report as reports
from peftrun.studies.claims import ClaimSpec

N = len(INSTANCES)
XSUM = {"dataset": "xsum"}


def _xsum_run(
    path, kind: str, seed: int, level: float, spread: float = 0.02, size: int | None = None, **method
):
    """An XSum run whose per-instance ROUGE scores sit around `level` (seeded noise, fixed per run)."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{seed}-{level}-{size}".encode()))
    # XSum's ROUGE is stored ×100 (the report prints it as stored)
    per = {
        name: list(100 * np.clip(level + spread * rng.standard_normal(N), 0, 1))
        for name in ("ROUGE-1", "ROUGE-2", "ROUGE-L")
    }
    scores = {name: float(np.mean(values)) for name, values in per.items()}
    data = {**XSUM, **({"train_size": size} if size else {})}
    return make_run(
        path, method={"kind": kind, **method}, seed=seed, data=data, scores=scores, per_example=per
    )


@pytest.fixture
def study(tmp_path):
    """prefix ≫ lora on every metric; lora ≈ adapter; two seeds each."""
    for seed in (101, 102):
        _xsum_run(tmp_path / f"prefix-{seed}", "prefix", seed, 0.50)
        _xsum_run(tmp_path / f"lora-{seed}", "lora", seed, 0.20)
        _xsum_run(tmp_path / f"adapter-{seed}", "adapter", seed, 0.20, bottleneck=4)
    return reports.build([tmp_path], split="test", samples=400)


def _spec(**fields) -> ClaimSpec:
    return ClaimSpec.model_validate(fields)


def _one(results, metric="ROUGE-2"):
    return next(r for r in results if r.metric == metric)


def test_a_directional_claim_held_reversed_and_inconclusive(study):
    held = _one(
        claims.evaluate(study, [_spec(better={"method.kind": "prefix"}, worse={"method.kind": "lora"})])
    )
    assert held.verdict == "held" and held.estimate == pytest.approx(30.0, abs=3) and held.p < 0.05
    assert held.mean_a > held.mean_b  # a: the claimed better row
    reversed_ = _one(
        claims.evaluate(study, [_spec(better={"method.kind": "lora"}, worse={"method.kind": "prefix"})])
    )
    assert reversed_.verdict == "reversed" and reversed_.estimate < 0
    unclear = _one(
        claims.evaluate(study, [_spec(better={"method.kind": "adapter"}, worse={"method.kind": "lora"})])
    )
    assert unclear.verdict == "inconclusive" and unclear.p > 0.05


def test_the_default_metric_is_the_datasets_primary_and_holm_adjusts_several(study):
    (only,) = claims.evaluate(study, [_spec(better={"method.kind": "prefix"}, worse={"method.kind": "lora"})])
    assert only.metric == "ROUGE-2"  # XSum's primary metric
    spec = _spec(
        better={"method.kind": "adapter"},
        worse={"method.kind": "lora"},
        metrics=["ROUGE-L", "ROUGE-2", "ROUGE-1"],
    )
    results = claims.evaluate(study, [spec])
    assert [r.metric for r in results] == ["ROUGE-2", "ROUGE-L", "ROUGE-1"]  # primary first
    from peftrun.studies.significance import holm

    assert [r.p for r in results] == pytest.approx(holm([r.p_raw for r in results]))
    assert all(r.p >= r.p_raw for r in results)


def test_near_parity_within_delta(study):
    wide = _one(
        claims.evaluate(study, [_spec(parity=[{"method.kind": "adapter"}, {"method.kind": "lora"}], delta=5)])
    )
    assert wide.verdict == "held" and -5 <= wide.ci_low <= wide.ci_high <= 5
    narrow = _one(
        claims.evaluate(
            study, [_spec(parity=[{"method.kind": "adapter"}, {"method.kind": "lora"}], delta=0.01)]
        )
    )
    assert narrow.verdict == "inconclusive"
    apart = _one(
        claims.evaluate(study, [_spec(parity=[{"method.kind": "prefix"}, {"method.kind": "lora"}], delta=1)])
    )
    assert apart.verdict == "reversed"


def test_parity_verdict_rule():
    assert claims.parity_verdict(-0.5, 0.8, 1.0) == "held"
    assert claims.parity_verdict(-1.5, 0.8, 1.0) == "inconclusive"
    assert claims.parity_verdict(1.2, 3.0, 1.0) == "reversed"
    assert claims.parity_verdict(-3.0, -1.1, 1.0) == "reversed"


def test_a_trend_over_an_ordered_key(tmp_path):
    """prefix − full shrinks from +30 to +15 to +0 as train_size grows: a negative slope."""
    for size, gap in ((50, 0.30), (100, 0.15), (200, 0.0)):
        for seed in (101, 102):
            _xsum_run(tmp_path / f"p-{size}-{seed}", "prefix", seed, 0.2 + gap, size=size)
            _xsum_run(tmp_path / f"f-{size}-{seed}", "full", seed, 0.2, size=size)
    for seed in (101, 102):  # a size only one side ran: not part of the trend
        _xsum_run(tmp_path / f"f-400-{seed}", "full", seed, 0.2, size=400)
    report = reports.build([tmp_path], split="test", samples=400)
    trend = {"a": {"method.kind": "prefix"}, "b": {"method.kind": "full"}, "over": "data.train_size"}
    held = _one(claims.evaluate(report, [_spec(trend={**trend, "slope": "negative"})]))
    assert held.verdict == "held" and held.estimate == pytest.approx(-15.0, abs=3)
    assert held.seed_pairs == [2, 2, 2]
    against = _one(claims.evaluate(report, [_spec(trend={**trend, "slope": "positive"})]))
    assert against.verdict == "reversed"


def test_a_side_matching_no_row_is_not_tested_and_several_rows_is_one_line(study):
    (missing,) = claims.evaluate(
        study, [_spec(better={"method.kind": "ptuning"}, worse={"method.kind": "lora"})]
    )
    assert missing.verdict == "not tested" and "no finished row has kind=ptuning" in missing.detail
    assert "| **not tested** |" in "\n".join(claims.markdown([missing], "test"))
    with pytest.raises(PeftrunError, match="matches 3 rows"):
        claims.evaluate(study, [_spec(better={"data.dataset": "xsum"}, worse={"method.kind": "lora"})])
    with pytest.raises(PeftrunError, match="metric 'BLEU' is not a report column"):
        claims.evaluate(
            study, [_spec(better={"method.kind": "prefix"}, worse={"method.kind": "lora"}, metric="BLEU")]
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"better": {"a": 1}}, "needs both"),
        ({"better": {"a": 1}, "worse": {"b": 1}, "parity": [{"a": 1}, {"b": 1}], "delta": 1}, "exactly one"),
        ({"parity": [{"a": 1}, {"b": 1}]}, "needs delta"),
        ({"better": {"a": 1}, "worse": {"b": 1}, "metric": "BLEU", "metrics": ["NIST"]}, "not both"),
    ],
)
def test_a_malformed_claim_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ClaimSpec.model_validate(fields)


def test_the_report_prints_the_claims_a_sweep_declared(tmp_path):
    """Claims are read from the sweep.json the sweep wrote (the sweep file's text, as declared)."""
    folder = tmp_path / "study"
    for seed in (101, 102):
        _xsum_run(folder / f"prefix-{seed}", "prefix", seed, 0.50)
        _xsum_run(folder / f"lora-{seed}", "lora", seed, 0.20)
    write_manifest(folder, [])
    manifest = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    manifest["sweep"] = (
        "base: x.yaml\ncases: [{}]\nclaims:\n"
        "  - {name: prefix beats lora, better: {method.kind: prefix}, worse: {method.kind: lora}}\n"
    )
    (folder / "sweep.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--samples", "300"])
    assert result.exit_code == 0, result.output
    assert "| prefix beats lora | ROUGE-2 |" in result.output
    assert "**held**" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--samples", "300", "--format", "json"])
    data = json.loads(result.output)
    assert [(c["claim"], c["verdict"]) for c in data["claims"]] == [("prefix beats lora", "held")]


def test_claims_are_those_declared_when_the_sweep_started(tmp_path):
    """A claim edited after the results came in does not change the verdicts: the report tests the
    claims of `sweep_at_start` and says the file was edited."""
    folder = tmp_path / "study"
    for seed in (101, 102):
        _xsum_run(folder / f"prefix-{seed}", "prefix", seed, 0.50)
        _xsum_run(folder / f"lora-{seed}", "lora", seed, 0.20)
    first = "claims: [{name: c, better: {method.kind: lora}, worse: {method.kind: prefix}}]\n"
    edited = "claims: [{name: c, better: {method.kind: prefix}, worse: {method.kind: lora}}]\n"
    (folder / "sweep.json").write_text(
        json.dumps({"name": "study", "points": [], "sweep": edited, "sweep_at_start": first}),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--samples", "300", "--format", "json"])
    data = json.loads(result.output)
    assert [(c["claim"], c["verdict"]) for c in data["claims"]] == [("c", "reversed")]
    assert "edited after the sweep started" in data["claim_notes"][0]


def test_the_manifest_keeps_the_sweep_file_of_its_first_start(tmp_path):
    from peftrun.studies import sweep_file
    from peftrun.studies.jobs import Manifest

    (tmp_path / "base.yaml").write_text("model: {name: tiny-gpt2}\n", encoding="utf-8")
    path = tmp_path / "s.yaml"
    path.write_text("base: base.yaml\ncases: [{}]\nclaims: []\n", encoding="utf-8")
    Manifest(sweep_file.load(path, tmp_path / "runs"), {}).write()
    path.write_text("base: base.yaml\ncases: [{}]\n# edited\n", encoding="utf-8")
    Manifest(sweep_file.load(path, tmp_path / "runs"), {}).write()
    data = json.loads((tmp_path / "runs" / "s" / "sweep.json").read_text(encoding="utf-8"))
    assert "# edited" in data["sweep"] and "# edited" not in data["sweep_at_start"]


def test_eval_compare_tests_xsum_runs_on_their_rouge(tmp_path):
    """`peftrun eval --compare` of two XSum runs: their stored per-instance ROUGE, not E2E's suite."""
    from peftrun.scoring import compare_runs

    worse = _xsum_run(tmp_path / "a", "lora", 101, 0.2)
    better = _xsum_run(tmp_path / "b", "prefix", 101, 0.5)
    rows = compare_runs(worse, better, "test", 300, 0)
    assert {r["metric"] for r in rows} == {"ROUGE-1", "ROUGE-2", "ROUGE-L"}
    assert all(r["delta"] > 20 and r["p"] < 0.05 and r["instances"] == N for r in rows)
