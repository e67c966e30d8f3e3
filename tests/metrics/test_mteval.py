"""BLEU and NIST (mteval Perl and pymteval variants): hand-computed cases and the official scorer."""

from __future__ import annotations

import math

import pytest
from _e2e_testdata import OFFICIAL, official_system, require_shared

from peftrun.metrics import mteval


def scores(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    return mteval.corpus_scores(mteval.instance_stats(hyps, refs))


def test_tokenization_13a() -> None:
    # punctuation split off; "." and "," kept inside numbers; "-" split after a digit only
    assert mteval.tokenize_perl("Prices: £20-25, rated 5.0/5. Family-friendly!") == (
        "prices : £20 - 25 , rated 5.0 / 5 . family-friendly !".split()
    )
    assert mteval.tokenize_py("It's &amp; 1,000.") == ["It's", "&", "1,000", "."]
    # Perl lower-cases ASCII only (tr/A-Z/a-z/); pymteval lower-cases n-grams with str.lower
    assert mteval.tokenize_perl("CAFÉ") == ["cafÉ"]
    # an empty output: no words for Perl, one empty word for pymteval
    assert mteval.tokenize_perl("") == []
    assert mteval.tokenize_py("") == [""]


# Instance 1: hyp "the cat sat on the mat" (6 words), refs of 6 and 7 words.
#   clipped matches / hyp n-grams: 1-grams 5/6 (the x2, cat, on, mat; not sat),
#   2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the mat), 4-grams 0/3.
#   closest reference: 6 words = hyp length, so BP = 1.
# Instance 2: hyp "on the mat" equals its second reference: 3/3, 2/2, 1/1, 0 4-grams.
# Corpus: 8/9, 5/7, 2/5, 0/3; r = c = 9.
CAT = (
    ["the cat sat on the mat", "on the mat"],
    [["the cat is on the mat", "there is a cat on the mat"], ["the cat is on the mat", "on the mat"]],
)


def test_bleu_by_hand() -> None:
    got = scores(*CAT)
    # Perl smooths the first zero precision to 1 / (2 * count): 0/3 -> 1/6.
    assert got["BLEU"] == pytest.approx((8 / 9 * 5 / 7 * 2 / 5 * 1 / 6) ** 0.25, rel=1e-12)
    # pymteval floors zero matches at 1e-15.
    assert got["BLEU_py"] == pytest.approx((8 / 9 * 5 / 7 * 2 / 5 * 1e-15 / 3) ** 0.25, rel=1e-12)


def test_bleu_brevity_penalty_by_hand() -> None:
    # hyp 2 words, reference 6: BP = exp(1 - 6/2).  Perl: no 3-/4-grams in the hypothesis,
    # those precisions are left out (log term 0).  pymteval counts len - n + 1 = 0 and -1
    # n-grams, floored at 1e-9, with 1e-15 matches: precisions 1e-6 each.
    got = scores(["the cat"], [["the cat sat on the mat"]])
    assert got["BLEU"] == pytest.approx(math.exp(-2), rel=1e-12)
    assert got["BLEU_py"] == pytest.approx(math.exp(-2) * (1e-6 * 1e-6) ** 0.25, rel=1e-9)


def test_closest_reference_ties_go_to_the_shorter() -> None:
    # hyp 4 words, refs of 3 and 5 words: both 1 away, the 3-word one counts (no BP).
    stats = mteval.instance_stats(["a b c d"], [["a b c d e", "a b c"]])
    assert stats.bleu_perl[0][0] == 3
    assert stats.bleu_py[0][0] == 3


def test_nist_by_hand() -> None:
    # hyp "a b c d e", refs "a b c d e" and "a b x d e" (10 reference words).
    # Info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn)):
    #   1-grams a, b, d, e: log2(10/2); c: log2(10/1)              -> sum 4 log2 5 + log2 10
    #   2-grams ab: log2(2/2)=0, bc: log2(2/1)=1, cd: log2(1/1)=0, de: log2(2/2)=0 -> 1
    #   3-grams abc: log2(2/1)=1, bcd, cde: 0                       -> 1
    #   4-, 5-grams: prefixes occur once                           -> 0
    # divided by the hypothesis n-gram counts 5, 4, 3, 2, 1; no length penalty (5 = 5).
    expected = (4 * math.log2(5) + math.log2(10)) / 5 + 1 / 4 + 1 / 3
    got = scores(["a b c d e"], [["a b c d e", "a b x d e"]])
    assert got["NIST"] == pytest.approx(expected, rel=1e-12)
    assert got["NIST_py"] == pytest.approx(expected, rel=1e-12)


def test_nist_length_penalty_is_half_at_two_thirds() -> None:
    # hyp "a b" vs ref "a b c": ratio 2/3, penalty exp(-beta ln^2(2/3)) = 0.5 by the choice
    # of beta; unigram infos log2(3/1) each, bigram "a b" 0.
    got = scores(["a b"], [["a b c"]])
    assert got["NIST"] == pytest.approx(0.5 * math.log2(3), rel=1e-12)
    assert got["NIST_py"] == pytest.approx(0.5 * math.log2(3), rel=1e-12)


def test_nist_reference_length_differs_between_variants() -> None:
    # Instance 1: one 4-word reference; instance 2: three 2-word references.
    # Perl: 10 reference words / (4 refs / 2 instances) = 5.  pymteval: 4 + 2 = 6.
    stats = mteval.instance_stats(["w x", "y z"], [["w x u v"], ["y z", "y z", "y z"]])
    perl, py = mteval.column_sums(stats.nist_perl), mteval.column_sums(stats.nist_py)
    assert perl[10] / (perl[11] / 2) == 5
    assert py[10] == 6


def test_sentence_bleu_is_smoothed() -> None:
    # The scorer's segment-level sentBLEU: pymteval with +1 on matches and counts.
    # "the cat": matches 2, 1, 0, 0 over counts 2, 1, 0, -1 -> 3/3, 2/2, 1/1, 1/max(0, 1e-9).
    # (pymteval's quirk: the -1 count makes the score exceed 1 for 2-word outputs.)
    stats = mteval.instance_stats(["the cat"], [["the cat sat on the mat"]])
    expected = math.exp(-2) * (3 / 3 * 2 / 2 * 1 / 1 * 1 / 1e-9) ** 0.25
    assert mteval.sentence_bleu(stats.bleu_py[0]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["tgen_dev", "perturbed_test", "template_test_vs_tokenized"])
def test_official_scorer_numbers(name: str) -> None:
    require_shared()
    got = scores(*official_system(name))
    for metric in ("BLEU", "NIST", "BLEU_py", "NIST_py"):
        # Perl sums NIST information in hash order, so its last bits vary run to run.
        assert got[metric] == pytest.approx(OFFICIAL[name][metric], rel=1e-13, abs=1e-13), metric


def test_perl_bleu_equals_sacrebleu_13a_lowercased_on_real_outputs() -> None:
    """An independent implementation of the same definition: sacrebleu's corpus BLEU with 13a
    tokens, lower-cased, closest-reference brevity penalty, on the challenge's TGen dev output."""
    import sacrebleu
    from _e2e_testdata import E2E, load_dev_refs

    require_shared()
    hyps = (E2E / "system_outputs" / "tgen_baseline_dev.txt").read_text(encoding="utf-8").splitlines()
    refs = load_dev_refs()
    most = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(most)]
    expected = sacrebleu.corpus_bleu(hyps, streams, lowercase=True, tokenize="13a").score / 100
    assert scores(hyps, refs)["BLEU"] == pytest.approx(expected, abs=1e-12)
