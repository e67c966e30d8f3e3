"""Reference files for `peftrun eval --references`: every layout gives one group per instance."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from peftrun.cli import app
from peftrun.data.references import read_references
from peftrun.errors import PeftrunError


def test_a_file_without_blank_lines_is_one_reference_per_line(tmp_path):
    gold = tmp_path / "test.target"
    gold.write_text("first summary\nsecond summary\nthird summary\n", encoding="utf-8")
    assert read_references(gold) == [["first summary"], ["second summary"], ["third summary"]]


def test_blank_lines_separate_multi_reference_instances(tmp_path):
    gold = tmp_path / "refs.txt"
    gold.write_text("a one\na two\n\nb one\n\n\nc one\nc two\nc three\n", encoding="utf-8")
    assert read_references(gold) == [["a one", "a two"], ["b one"], ["c one", "c two", "c three"]]


def test_crlf_and_a_missing_final_newline_change_nothing(tmp_path):
    gold = tmp_path / "refs.txt"
    gold.write_bytes(b"x\r\ny\r\nz")
    assert read_references(gold) == [["x"], ["y"], ["z"]]


def test_csv_groups_consecutive_rows_of_an_mr_and_jsonl_takes_lists_or_single_strings(tmp_path):
    csv_file = tmp_path / "refs.csv"
    csv_file.write_text('mr,ref\n"name[A]",one\n"name[A]",two\n"name[B]",three\n', encoding="utf-8")
    assert read_references(csv_file) == [["one", "two"], ["three"]]
    jsonl = tmp_path / "refs.jsonl"
    jsonl.write_text(json.dumps({"references": ["p", "q"]}) + "\n" + json.dumps({"summary": "r"}) + "\n")
    assert read_references(jsonl) == [["p", "q"], ["r"]]


def test_a_bad_jsonl_line_names_its_number(tmp_path):
    jsonl = tmp_path / "refs.jsonl"
    jsonl.write_text('{"summary": "ok"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(PeftrunError, match=r"refs.jsonl:2"):
        read_references(jsonl)


def test_eval_scores_a_one_summary_per_line_gold_file_against_aligned_outputs(tmp_path):
    """`peftrun eval --predictions out.txt --references gold.txt --dataset xsum`: line i of the
    outputs is scored against line i of the gold file (the distributed layout of summaries)."""
    from rouge_score import rouge_scorer

    summaries = ["the cat sat on the mat", "a dog ran in the park today", "rain is expected tomorrow"]
    outputs = ["the cat sat on a mat", "a dog ran", "sunshine is expected tomorrow"]
    (tmp_path / "gold.txt").write_text("\n".join(summaries) + "\n", encoding="utf-8")
    (tmp_path / "out.txt").write_text("\n".join(outputs) + "\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--predictions",
            str(tmp_path / "out.txt"),
            "--references",
            str(tmp_path / "gold.txt"),
            "--dataset",
            "xsum",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["test"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = [scorer.score(ref, out) for ref, out in zip(summaries, outputs, strict=True)]
    for key, name in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L")):
        mean = 100 * sum(e[key].fmeasure for e in expected) / len(expected)
        assert scores[name] == pytest.approx(mean, abs=1e-9)
