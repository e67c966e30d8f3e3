"""BLEU and NIST as the official E2E scorer computes them, in two variants.

* ``perl``: NIST's ``mteval-v13a.pl`` as patched by the E2E organisers
  (``mteval-v13a-sig.pl`` in tuetschek/e2e-metrics; the scorer's default).
* ``py``: the scorer's own Python port, ``metrics/pymteval.py`` (its ``-p`` option,
  used by the Prefix-Tuning paper).

Both tokenise with mteval's "13a" rules (SGML entities decoded, punctuation split off,
periods and commas kept inside numbers, dash split after a digit) and lower-case.

BLEU (Papineni et al., 2002), corpus level, N = 4:
    BLEU = BP * exp(1/4 * sum_n log p_n),  p_n = clipped n-gram matches / hypothesis n-grams
    BP   = min(1, exp(1 - r / c)),  c = hypothesis words, r = sum over instances of the
           length of the reference closest in length to the hypothesis (ties: the shorter).
  perl: a corpus precision with zero matches is smoothed to 1 / (2^k * count) (k-th such n).
  py:   zero matches are floored at 1e-15; counts are len - n + 1 per instance, unclipped.

NIST (Doddington, 2002), N = 5:
    NIST = sum_n [ sum_{matched w} Info(w) / (hypothesis n-grams) ] * exp(-beta log^2 min(1, L_sys / L_ref))
    Info(w_1..w_n) = log2( count(w_1..w_{n-1}) / count(w_1..w_n) ), counts over all references
    of the evaluated set (count of the empty prefix = number of reference words);
    beta = -ln 0.5 / ln^2 1.5 (penalty 0.5 at 2/3 of the reference length).
  perl: L_ref = total reference words / average number of references per instance;
        hypothesis n-gram counts are max(0, len - n + 1).
  py:   L_ref = sum over instances of the mean reference length; counts are len - n + 1
        (may go negative for very short outputs, as in pymteval).

Written from those definitions and a reading of mteval-v13a-sig.pl / pymteval.py; checked
against both scripts' outputs in tests/metrics/test_mteval.py.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

BLEU_N = 4
NIST_N = 5

# Perl's \s on a Unicode string (Perl 5.18+).  Python's \s also matches \x1c-\x1f.
_PERL_WS = "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_PERL_WS_RUN = re.compile(_PERL_WS + "+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# The 13a rules (shared by both variants); "[{-~[-` -&(-+:-@/]" is ASCII punctuation
# except ' , - . (mteval's own character ranges).
_PUNCT = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_PERIOD_COMMA_AFTER = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE = re.compile(r"([\.,])([^0-9])")
_DIGIT_DASH = re.compile(r"([0-9])(-)")


def _entities(text: str) -> str:
    text = text.replace("<skipped>", "")
    text = text.replace("-\n", "").replace("\n", " ")
    return text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")


def _split_13a(text: str) -> str:
    # Same substitutions as the scripts' s/(...)/ $1 /g; functions are faster than templates.
    text = _PUNCT.sub(lambda m: f" {m[1]} ", text)
    text = _PERIOD_COMMA_AFTER.sub(lambda m: f"{m[1]} {m[2]} ", text)
    text = _PERIOD_COMMA_BEFORE.sub(lambda m: f" {m[1]} {m[2]}", text)
    return _DIGIT_DASH.sub(lambda m: f"{m[1]} - ", text)


def tokenize_perl(text: str) -> list[str]:
    """mteval-v13a.pl ``tokenization`` of one segment, lower-cased as the script does.

    The scorer writes outputs into an SGML file unescaped; mteval collapses white space in
    the document before tokenising, so a newline never reaches the ``-\\n`` rule.  Only
    ASCII letters are lower-cased (``tr/[A-Z]/[a-z]/``).
    """
    text = _PERL_WS_RUN.sub(" ", text)
    text = _entities(text)
    text = _split_13a(" " + text.translate(_ASCII_LOWER) + " ")
    text = _PERL_WS_RUN.sub(" ", text).strip(" ")
    return text.split(" ") if text else []


def tokenize_py(text: str) -> list[str]:
    """pymteval ``NGramScore.tokenize`` (case kept; n-grams are lower-cased later).

    An empty string gives one empty token, as in pymteval (it counts as one word).
    """
    text = _split_13a(" " + _entities(text) + " ")
    return re.sub(r"\s+", " ", text).strip().split(" ")


# Characters where Python's and Perl's white space differ.
_WS_DIFFERS = re.compile("[\n\r\x0b\x0c\x1c-\x1f]")


def _perl_from_py(text: str, py_tokens: list[str]) -> list[str]:
    """Perl tokens, reusing the pymteval tokens of the same text where provably equal.

    Without line breaks, control separators, non-ASCII white space or non-ASCII letters
    that lower-case differently, the two tokenisers differ only in ASCII lower-casing and
    in giving an empty text no words (Perl) or one empty word (pymteval).
    """
    if _WS_DIFFERS.search(text) or not (
        text.isascii() or all(c.isascii() or (c.lower() == c and not c.isspace()) for c in set(text))
    ):
        return tokenize_perl(text)
    return [] if py_tokens == [""] else [t.lower() for t in py_tokens]


def ngram_counts(tokens: Sequence[str], max_n: int) -> Counter[tuple[str, ...]]:
    """Counts of all 1..max_n-grams of ``tokens``: unigrams first, each order by first position."""
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_n + 1):
        counts.update(zip(*[tokens[i:] for i in range(n)]))  # noqa: B905 (ragged on purpose)
    return counts


class _Counter:
    """Caches n-gram counts per token sequence: the two variants mostly share tokens."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], Counter[tuple[str, ...]]] = {}

    def __call__(self, tokens: Sequence[str]) -> Counter[tuple[str, ...]]:
        key = tuple(tokens)
        if key not in self._cache:
            self._cache[key] = ngram_counts(key, NIST_N)
        return self._cache[key]


@dataclass
class InstanceStats:
    """Per-instance sufficient statistics; corpus scores are functions of their sums.

    ``bleu``: [ref_len, matches_1..4, hyp_ngrams_1..4]
    ``nist``: [info_1..5, hyp_ngrams_1..5, ref_len_term, num_refs]
      (perl: ref_len_term = total reference words; py: mean reference length).
    """

    bleu_perl: list[list[float]]
    nist_perl: list[list[float]]
    bleu_py: list[list[float]]
    nist_py: list[list[float]]


def _closest_perl(ref_lens: list[int], hyp_len: int) -> int:
    """mteval's brevity_penalty_closest, folded over the references in file order."""
    best = ref_lens[0]
    for length in ref_lens[1:]:
        if not length:  # padding for a missing reference
            continue
        if abs(hyp_len - length) < abs(hyp_len - best) or (
            abs(hyp_len - length) == abs(hyp_len - best) and length < best
        ):
            best = length
    return best


def instance_stats(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> InstanceStats:
    """Tokenise once and collect both variants' per-instance statistics."""
    count = _Counter()
    py_tokens = [tokenize_py(h) for h in hypotheses], [[tokenize_py(r) for r in rs] for rs in references]
    perl_tokens = (
        [_perl_from_py(h, toks) for h, toks in zip(hypotheses, py_tokens[0], strict=True)],
        [
            [_perl_from_py(r, t) for r, t in zip(rs, ts, strict=True)]
            for rs, ts in zip(references, py_tokens[1], strict=True)
        ],
    )
    stats = InstanceStats([], [], [], [])
    # Both variants usually see the same (cached, identical) count objects: share the work.
    totals_cache: dict[tuple[int, ...], Counter[tuple[str, ...]]] = {}
    clip_cache: dict[tuple[int, ...], list[tuple[tuple[str, ...], int]]] = {}
    for name, (hyps, refs), lower in (
        ("perl", perl_tokens, lambda toks: toks),
        ("py", py_tokens, lambda toks: [t.lower() for t in toks]),
    ):
        hyp_counts = [count(lower(h)) for h in hyps]
        ref_counts = [[count(lower(r)) for r in rs] for rs in refs]
        key = tuple(id(c) for cs in ref_counts for c in cs)
        if key not in totals_cache:
            # NIST information weights come from n-gram counts over all references of the
            # set; the empty prefix counts every reference word.
            totals_cache[key] = Counter(chain.from_iterable(c.elements() for cs in ref_counts for c in cs))
            totals_cache[key][()] = sum(len(r) for rs in refs for r in rs)
        totals = totals_cache[key]
        for hyp, rs, hc, rc in zip(hyps, refs, hyp_counts, ref_counts, strict=True):
            clip_key = (id(hc), *map(id, rc))
            if clip_key not in clip_cache:
                clip_cache[clip_key] = _clip(hc, rc)
            bleu, nist = _segment(name, len(hyp), [len(r) for r in rs], clip_cache[clip_key], totals)
            getattr(stats, f"bleu_{name}").append(bleu)
            getattr(stats, f"nist_{name}").append(nist)
    return stats


def _clip(
    hyp_counts: Counter[tuple[str, ...]], ref_counts: list[Counter[tuple[str, ...]]]
) -> list[tuple[tuple[str, ...], int]]:
    """Hypothesis n-grams with their counts clipped to the most in any one reference (> 0)."""
    ref_gets = [rc.get for rc in ref_counts]
    clipped = ((gram, min(c, max([get(gram, 0) for get in ref_gets]))) for gram, c in hyp_counts.items())
    return [(gram, c) for gram, c in clipped if c]


def _segment(
    variant: str,
    hyp_len: int,
    ref_lens: list[int],
    clipped: list[tuple[tuple[str, ...], int]],
    totals: Counter[tuple[str, ...]],
) -> tuple[list[float], list[float]]:
    matches = [0] * NIST_N
    weighted: list[list[float]] = [[] for _ in range(NIST_N)]  # info * clipped count, in order
    for gram, c in clipped:
        n = len(gram)
        matches[n - 1] += c
        count, prefix = totals[gram], totals[gram[:-1]]
        if variant == "perl":  # -log(count/prefix)/log 2, as the Perl script writes it
            weighted[n - 1].append(-math.log(count / prefix) / math.log(2) * c)
        else:  # pymteval: math.log(prefix/count, 2)
            weighted[n - 1].append(math.log(prefix / float(count), 2) * c)
    infos = [sum(w) for w in weighted]
    if variant == "perl":
        hyp_ngrams = [max(0, hyp_len - n + 1) for n in range(1, NIST_N + 1)]
        ref_len = _closest_perl(ref_lens, hyp_len)
        nonempty = sum(1 for length in ref_lens if length)
        nist = infos + hyp_ngrams + [sum(ref_lens), nonempty]
    else:
        hyp_ngrams = [hyp_len - n + 1 for n in range(1, NIST_N + 1)]
        ref_len = min(ref_lens, key=lambda length: (abs(length - hyp_len), length))
        nist = infos + hyp_ngrams + [sum(ref_lens) / float(len(ref_lens)), len(ref_lens)]
    bleu = [ref_len] + matches[:BLEU_N] + hyp_ngrams[:BLEU_N]
    return bleu, nist


def column_sums(rows: Sequence[Sequence[float]]) -> list[float]:
    """Sums in instance order (float sums depend on the order; this is the scripts')."""
    sums = [0.0 if isinstance(v, float) else 0 for v in rows[0]] if rows else []
    for row in rows:
        for i, v in enumerate(row):
            sums[i] += v
    return sums


def bleu_perl(sums: Sequence[float]) -> float:
    """mteval ``bleu_score`` (the default, smoothed) from summed BLEU statistics."""
    ref_len, matches, hyp = sums[0], sums[1 : 1 + BLEU_N], sums[1 + BLEU_N :]
    exp_len_score = math.exp(min(0, 1 - ref_len / hyp[0])) if hyp[0] > 0 else 0
    score, smooth = 0.0, 1
    for m, t in zip(matches, hyp, strict=True):
        if t == 0:
            iscore = 0.0
        elif m == 0:
            smooth *= 2
            iscore = math.log(1 / (smooth * t))
        else:
            iscore = math.log(m / t)
        score += iscore
    return math.exp(score / BLEU_N) * exp_len_score


def bleu_py(sums: Sequence[float], smoothing: float = 0.0) -> float:
    """pymteval ``BLEUScore.bleu`` from summed statistics (``smoothing`` is added to hits and counts)."""
    ref_len, hits, cand = sums[0], sums[1 : 1 + BLEU_N], sums[1 + BLEU_N :]
    bp = 1.0
    if cand[0] <= ref_len:
        bp = math.exp(1.0 - ref_len / (float(cand[0]) if cand[0] else 1e-5))
    log_sum = 0.0
    for h, c in zip(hits, cand, strict=True):
        log_sum += math.log(max(h + smoothing, 1e-15) / max(c + smoothing, 1e-9))
    return bp * math.exp((1.0 / BLEU_N) * log_sum)


def nist_perl(sums: Sequence[float], num_segments: int) -> float:
    """mteval ``nist_score`` from summed NIST statistics."""
    infos, hyp = sums[:NIST_N], sums[NIST_N : 2 * NIST_N]
    ref_words, num_refs = sums[2 * NIST_N], sums[2 * NIST_N + 1]
    score = 0.0
    for info, t in zip(infos, hyp, strict=True):
        score += info / max(t, 1)
    ratio = hyp[0] / (ref_words / (num_refs / num_segments))
    if ratio >= 1:
        return score * 1
    if ratio <= 0:
        return score * 0
    beta = -math.log(0.5) / math.log(1.5) / math.log(1.5)
    return score * math.exp(-beta * math.log(ratio) * math.log(ratio))


def nist_py(sums: Sequence[float]) -> float:
    """pymteval ``NISTScore.nist`` from summed statistics.

    pymteval divides by zero when an n-gram order has no hypothesis n-grams at all; that
    term counts as 0 here.
    """
    infos, cand, avg_ref_len = sums[:NIST_N], sums[NIST_N : 2 * NIST_N], sums[2 * NIST_N]
    nist_sum = sum(info / total if total else 0.0 for info, total in zip(infos, cand, strict=True))
    ratio = cand[0] / float(avg_ref_len)
    if ratio >= 1:
        bp = 1.0
    elif ratio <= 0:
        bp = 0.0
    else:
        beta = -math.log(0.5) / math.log(1.5) ** 2
        bp = math.exp(-beta * math.log(ratio) ** 2)
    return bp * nist_sum


def sentence_bleu(stats_row: Sequence[float]) -> float:
    """Segment-level BLEU of one instance's statistics, in [0, 1]; 0 for an output without words.

    Add-one smoothing on every order's matches and hypothesis n-grams (BLEU+1, Lin and Och,
    2004), the closest-reference brevity penalty.  Pass a ``bleu_perl`` row: its n-gram counts
    are max(0, len - n + 1) and an empty output has no words (a pymteval row counts an empty
    output as one word and goes negative below n words, which once gave sentBLEU 487 for "").
    Counts are clamped here too, so that any row gives a value in [0, 1].
    """
    ref_len, hits, cand = stats_row[0], stats_row[1 : 1 + BLEU_N], stats_row[1 + BLEU_N :]
    if cand[0] <= 0:
        return 0.0
    log_sum = 0.0
    for h, c in zip(hits, cand, strict=True):
        c = max(c, 0)
        log_sum += math.log((min(h, c) + 1.0) / (c + 1.0))  # matches are clipped: h <= c
    return min(1.0, math.exp(1.0 - ref_len / cand[0])) * math.exp(log_sum / BLEU_N)


def corpus_scores(stats: InstanceStats) -> dict[str, float]:
    """All four corpus scores from per-instance statistics."""
    n = len(stats.bleu_perl)
    return {
        "BLEU": bleu_perl(column_sums(stats.bleu_perl)),
        "NIST": nist_perl(column_sums(stats.nist_perl), n),
        "BLEU_py": bleu_py(column_sums(stats.bleu_py)),
        "NIST_py": nist_py(column_sums(stats.nist_py)),
    }
