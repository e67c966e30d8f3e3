"""Shared E2E test data for the metric tests: the real files in ../shared, read as the
official scorer reads them, and the small system outputs in fixtures/."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
E2E = SHARED / "data" / "e2e"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def require(condition: bool, reason: str) -> None:
    """Skip locally when a resource is missing, but fail in CI (where it must exist)."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def require_shared() -> None:
    require(E2E.is_dir(), f"E2E data not found at {E2E}")


def grouped_csv_refs(path: Path) -> list[list[str]]:
    """References of consecutive identical MRs, in file order (as measure_scores.py groups)."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    refs: list[list[str]] = []
    current = None
    for mr, ref in rows:
        if mr != current:
            refs.append([])
            current = mr
        refs[-1].append(ref)
    return refs


def load_test_refs() -> list[list[str]]:
    return grouped_csv_refs(E2E / "original" / "testset_w_refs.csv")


def load_dev_refs() -> list[list[str]]:
    return grouped_csv_refs(E2E / "original" / "devset.csv")


def load_tokenized_test_refs() -> list[list[str]]:
    """Prefix-Tuning's tokenised test references, grouped by source in first-appearance order."""
    groups: dict[str, list[str]] = {}
    with (E2E / "prefix_tuning_format" / "src1_test.txt").open(encoding="utf-8") as fh:
        for line in fh:
            source, ref = line.rstrip("\n").split("||")
            groups.setdefault(source, []).append(ref)
    return list(groups.values())


def read_outputs(path: Path) -> list[str]:
    """One output per line, stripped, as measure_scores.py reads a plain-text system file."""
    with path.open(encoding="utf-8") as fh:
        return [line.strip() for line in fh]


# Numbers printed by the official scorer, tuetschek/e2e-metrics measure_scores.py @ 1b9c4d8
# (unmodified; run locally with pycocoevalcap's jars), default mode for BLEU/NIST and
# "-p" for BLEU_py/NIST_py.  Perl prints 4 decimals; its full-precision values come from
# the same mteval-v13a-sig.pl with only the final printf widened to %.17g.
OFFICIAL = {
    # TGen baseline on the dev set (also in ../shared/data/e2e/system_outputs/README.md)
    "tgen_dev": {
        "BLEU": 0.6924837734843423,
        "NIST": 8.47809656678987,
        "BLEU_py": 0.6924837734843423,
        "NIST_py": 8.47809656678987,
        "METEOR": 0.47033672350154004,
        "ROUGE_L": 0.7257219949976054,
        "CIDEr": 2.3986937002949094,
    },
    # test set: each MR's first reference, scored against all its references
    "first_ref_test": {
        "BLEU": 1.0,
        "NIST": 14.236498836851847,
        "BLEU_py": 1.0,
        "NIST_py": 14.232030974145921,
        "METEOR": 1.0,
        "ROUGE_L": 1.0,
        "CIDEr": 3.4021384007557036,
    },
    # fixtures/template_test.txt: a slot-filling template
    "template_test": {
        "BLEU": 0.5616676319452901,
        "NIST": 7.34181436324819,
        "BLEU_py": 0.5616676319452901,
        "NIST_py": 7.341814363248189,
        "METEOR": 0.44136693704205826,
        "ROUGE_L": 0.6609551746389196,
        "CIDEr": 2.070427590783507,
    },
    # fixtures/perturbed_test.txt: last references truncated, upper-cased, emptied, with
    # punctuation removed or odd tokens added (Perl and Python BLEU/NIST differ here)
    "perturbed_test": {
        "BLEU": 0.8022410930176928,
        "NIST": 11.872419509564459,
        "BLEU_py": 0.8093394091809691,
        "NIST_py": 11.693285832662863,
        "METEOR": 0.5830659242702562,
        "ROUGE_L": 0.8263797775634513,
        "CIDEr": 2.0977391776868988,
    },
    # the template against Prefix-Tuning's tokenised test references
    "template_test_vs_tokenized": {
        "BLEU": 0.5419341824077413,
        "NIST": 7.079920797879694,
        "BLEU_py": 0.5419341824077413,
        "NIST_py": 7.079920797879696,
        "METEOR": 0.44146140416006535,
        "ROUGE_L": 0.6536883498955802,
        "CIDEr": 1.5611024119593444,
    },
    # raw first references against the tokenised references
    "first_ref_test_vs_tokenized": {
        "BLEU": 0.9432386866997501,
        "NIST": 13.541235280920088,
        "BLEU_py": 0.9432386866997501,
        "NIST_py": 13.477018660110746,
        "METEOR": 0.9002288856810308,
        "ROUGE_L": 0.9808428990656488,
        "CIDEr": 3.179397024838771,
    },
}


def official_system(name: str) -> tuple[list[str], list[list[str]]]:
    """(outputs, references) of one entry of OFFICIAL."""
    if name == "tgen_dev":
        return read_outputs(E2E / "system_outputs" / "tgen_baseline_dev.txt"), load_dev_refs()
    raw_refs = load_test_refs()
    base, _, against = name.partition("_vs_")
    if base == "first_ref_test":
        outputs = [refs[0].strip() for refs in raw_refs]  # written to a file, read back
    else:
        outputs = read_outputs(FIXTURES / f"{base}.txt")
    return outputs, (load_tokenized_test_refs() if against == "tokenized" else raw_refs)
