"""score_e2e: the whole E2E suite against the official scorer, and its error handling."""

from __future__ import annotations

import pytest
from _e2e_testdata import OFFICIAL, official_system, require_shared

from peftrun.errors import PeftrunError
from peftrun.metrics import coco, e2e
from peftrun.metrics.e2e import METRICS, MetricReport, score_e2e

HYPS = ["The Eagle is a pub.", "Near the river."]
REFS = [["The Eagle is a pub in the city centre.", "The Eagle pub."], ["It is near the river."]]


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_matches_official_scorer(name: str) -> None:
    require_shared()
    report = score_e2e(*official_system(name))
    assert isinstance(report, MetricReport)
    for metric in METRICS:
        if metric == "METEOR" and not e2e.java_available():
            assert report.scores[metric] is None
            continue
        # Official values to the last bits but for NIST (Perl sums in hash order).
        assert report.scores[metric] == pytest.approx(OFFICIAL[name][metric], rel=1e-12), metric


def test_per_example_scores_average_to_the_corpus_score() -> None:
    report = score_e2e(HYPS, REFS, metrics=("ROUGE_L", "CIDEr", "BLEU"))
    for metric in ("ROUGE_L", "CIDEr"):
        values = report.per_example[metric]
        assert len(values) == 2
        assert sum(values) / 2 == pytest.approx(report.scores[metric])
    assert len(report.per_example["sentBLEU"]) == 2
    assert set(report.scores) == {"ROUGE_L", "CIDEr", "BLEU"}


def test_length_mismatch_is_a_one_line_error() -> None:
    with pytest.raises(PeftrunError, match=r"^expected 2 outputs, got 1$"):
        score_e2e(HYPS[:1], REFS)


def test_instance_without_references_is_an_error() -> None:
    with pytest.raises(PeftrunError, match="instance 1"):
        score_e2e(HYPS, [REFS[0], []])


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(PeftrunError, match="unknown E2E metric 'BLEURT'"):
        score_e2e(HYPS, REFS, metrics=("BLEURT",))


def test_empty_outputs_are_scored_and_noted() -> None:
    report = score_e2e(["", HYPS[1]], REFS, metrics=("BLEU", "BLEU_py", "ROUGE_L"))
    assert any("1 of 2 outputs are empty" in note for note in report.notes)
    assert report.per_example["ROUGE_L"][0] == 0.0
    assert 0 < report.scores["BLEU"] < 1


def test_without_java_meteor_is_none_and_the_rest_is_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coco, "java_available", lambda: False)
    report = score_e2e(HYPS, REFS)
    assert report.scores["METEOR"] is None
    assert "METEOR" not in report.per_example
    assert any("apt-get install -y default-jre-headless" in note for note in report.notes)
    assert all(report.scores[m] is not None for m in METRICS if m != "METEOR")
    assert "METEOR" in report.scorers and "tokenizer" in report.scorers


def test_line_breaks_in_outputs_are_spaces() -> None:
    split = score_e2e(["The Eagle is\na pub."], [["The Eagle is a pub."]], metrics=("BLEU", "CIDEr"))
    joined = score_e2e(["The Eagle is a pub."], [["The Eagle is a pub."]], metrics=("BLEU", "CIDEr"))
    assert split.scores == joined.scores
    assert split.notes


def test_prestart_meteor_does_nothing_without_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coco, "java_available", lambda: False)
    monkeypatch.setattr(coco, "meteor_process", lambda: pytest.fail("must not start METEOR"))
    e2e.prestart_meteor()
