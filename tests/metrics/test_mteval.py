"""BLEU and NIST (mteval Perl and pymteval variants): hand-computed cases and the official scorer."""

from __future__ import annotations

import math

import pytest
from _e2e_testdata import OFFICIAL, official_system, require_shared
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_sentence_bleu_is_bleu_plus_one_by_hand() -> None:
    # "the cat" vs a 6-word reference: matches 2, 1, 0, 0 of 2, 1, 0, 0 hypothesis n-grams;
    # +1 on both: 3/3, 2/2, 1/1, 1/1; brevity penalty exp(1 - 6/2).
    stats = mteval.instance_stats(["the cat"], [["the cat sat on the mat"]])
    assert mteval.sentence_bleu(stats.bleu_perl[0]) == pytest.approx(math.exp(-2), rel=1e-12)
    # "on the mat" vs "the cat is on the mat": 3/3, 2/2, 1/1, 0/0 matched, all +1 -> 1;
    # r = 6, c = 3.
    stats = mteval.instance_stats(["on the mat"], [["the cat is on the mat"]])
    assert mteval.sentence_bleu(stats.bleu_perl[0]) == pytest.approx(math.exp(-1), rel=1e-12)


# The case: two references of ten words and a short one (5 tokens with the period).
# Before the fix sentBLEU was 487.04 for "" and 579.19 for "." (pymteval counts went negative).
SHORT_OUTPUT_REFS = [
    "The Eagle is a family friendly pub near the river.",
    "The Eagle pub is near the Burger King in town.",
    "Eagle is a pub.",
]


def test_sentence_bleu_of_degenerate_outputs() -> None:
    from peftrun.metrics.e2e import score_e2e

    hyps = ["", "   ", ".", SHORT_OUTPUT_REFS[0]]
    got = score_e2e(hyps, [SHORT_OUTPUT_REFS] * len(hyps), metrics=("BLEU",)).per_example["sentBLEU"]
    assert got[0] == 0.0 and got[1] == 0.0  # no words
    # "." (1 word) matches the references' "."; every +1 precision is 1; the closest reference
    # has 5 words: BP = exp(1 - 5/1).
    assert got[2] == pytest.approx(math.exp(-4), rel=1e-12)
    assert got[3] == 1.0  # a copy of a reference


_WORDS = ["the", "The", "Eagle", "pub", "near", "river", "£20-25", "5.0", "É", "&amp;", "<skipped>"]
_PUNCT = [".", ",", "!", "?", "-", "'", '"', "(", ")", "..."]
_SPACE = [" ", "  ", "\t", "\n", "\u00a0"]
_piece = st.sampled_from(_WORDS + _PUNCT + _SPACE)
_texts = st.one_of(
    st.sampled_from(["", " ", ".", "!!!", "pub", "The", "<skipped>", "\n"]),  # degenerate
    st.lists(_piece, max_size=25).map("".join),
    st.lists(_piece, max_size=25).map(" ".join),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None, database=None)
@given(hyp=_texts, refs=st.lists(_texts, min_size=1, max_size=4))
def test_sentence_bleu_is_in_0_1_and_0_without_words(hyp: str, refs: list[str]) -> None:
    stats = mteval.instance_stats([hyp], [refs])
    got = mteval.sentence_bleu(stats.bleu_perl[0])
    assert 0.0 <= got <= 1.0
    if not mteval.tokenize_perl(hyp):
        assert got == 0.0
    # Any row is bounded, also pymteval's (negative counts for short outputs).
    assert 0.0 <= mteval.sentence_bleu(stats.bleu_py[0]) <= 1.0


@settings(max_examples=200, deadline=None, database=None)
@given(refs=st.lists(_texts, min_size=1, max_size=4), pick=st.integers(min_value=0, max_value=3))
def test_sentence_bleu_of_a_copy_of_a_reference_is_1(refs: list[str], pick: int) -> None:
    copy = refs[pick % len(refs)]
    stats = mteval.instance_stats([copy], [refs])
    expected = 1.0 if mteval.tokenize_perl(copy) else 0.0
    assert mteval.sentence_bleu(stats.bleu_perl[0]) == expected


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
