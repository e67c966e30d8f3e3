"""METEOR 1.5, ROUGE-L and CIDEr-D as the COCO caption evaluation code computes them.

The E2E scorer passes references and outputs through pycocoevalcap: all text is first
PTB-tokenised, lower-cased and stripped of punctuation (``ptb_tokenizer``, pure Python
here), then:

* ROUGE-L (Lin, 2004; COCO ``rouge.py``): per instance, with LCS = longest common
  subsequence of whitespace-split tokens, P = max_r LCS/|hyp| and R = max_r LCS/|ref|
  taken *separately* over the references, F = (1 + b^2) P R / (R + b^2 P), b = 1.2;
  the corpus score is the mean over instances.
* CIDEr-D (Vedantam et al., 2015; COCO ``cider_scorer.py``): n = 1..4 TF-IDF vectors,
  IDF = log(#instances) - log(max(1, df)) with df counted over the reference sets of the
  evaluated instances; per reference the clipped cosine min(h, r)·r / (|h||r|) times a
  Gaussian length penalty exp(-(l_h - l_r)^2 / (2·6^2)) (COCO's l counts *bigrams*);
  averaged over n and references, times 10; the corpus score is the mean over instances.
* METEOR 1.5 (Denkowski & Lavie, 2014): the jar shipped in pycocoevalcap, started once
  as COCO starts it (``-l en -norm``, ``-stdio``); the corpus score is METEOR's own
  aggregate over all segment statistics (not the mean of segment scores).

The arithmetic follows the COCO code step by step (same order, numpy where it uses
numpy), so the scores agree to the last bits, not just to 1e-4.
"""

from __future__ import annotations

import atexit
import importlib.util
import math
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from peftrun.metrics import ptb_tokenizer

ROUGE_BETA = 1.2
CIDER_N = 4
CIDER_SIGMA = 6.0
METEOR_JAR = "meteor-1.5.jar"
METEOR_ARGS = ["-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]  # as COCO
# Faster JVM start-up (~1 s of ~7 s spent loading the paraphrase table); the garbage
# collector does not change any result.
JVM_OPTIONS = ["-XX:+IgnoreUnrecognizedVMOptions", "-XX:+UseParallelGC"]


def tokenize(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    """COCO's tokenisation: references in one pass, outputs in another, as COCOEvalCap does."""
    flat = ptb_tokenizer.tokenize([r for refs in references for r in refs])
    grouped, start = [], 0
    for refs in references:
        grouped.append(flat[start : start + len(refs)])
        start += len(refs)
    return ptb_tokenizer.tokenize(hypotheses), grouped


# --- ROUGE-L --------------------------------------------------------------------------
def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (bit-parallel, Hyyrö 2004).

    Bit i of ``v`` is 0 where row ``a[i]`` has gained a match; the count of zero bits
    after all of ``b`` is the LCS length.  Same number as the COCO dynamic programme.
    """
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l_instance(hypothesis: str, references: Sequence[str]) -> float:
    """COCO ``Rouge.calc_score`` for one tokenised output and its tokenised references."""
    hyp = hypothesis.split(" ")  # COCO splits on " ", so "" is one (empty) token
    precs, recs = [], []
    for reference in references:
        ref = reference.split(" ")
        lcs = lcs_length(ref, hyp)
        precs.append(lcs / float(len(hyp)))
        recs.append(lcs / float(len(ref)))
    p, r = max(precs), max(recs)
    if p != 0 and r != 0:
        return ((1 + ROUGE_BETA**2) * p * r) / float(r + ROUGE_BETA**2 * p)
    return 0.0


def rouge_l(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus ROUGE-L (mean of instance scores) and the instance scores."""
    scores = [rouge_l_instance(h, rs) for h, rs in zip(hypotheses, references, strict=True)]
    return float(np.mean(np.array(scores))), scores


# --- CIDEr-D --------------------------------------------------------------------------
def _ngrams(sentence: str) -> dict[tuple[str, ...], int]:
    """1..4-gram counts of ``sentence.split()`` in COCO's insertion order."""
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, CIDER_N + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i : i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


class CiderD:
    """CIDEr-D with document frequencies from a fixed set of reference sets."""

    def __init__(self, references: Sequence[Sequence[str]]):
        self.ref_counts = [[_ngrams(r) for r in refs] for refs in references]
        df: dict[tuple[str, ...], float] = {}
        for refs in self.ref_counts:
            for gram in {g for counts in refs for g in counts}:
                df[gram] = df.get(gram, 0.0) + 1
        self.df = df
        self.ref_len = np.log(float(len(self.ref_counts)))
        self._idf: dict[tuple[str, ...], float] = {}

    def _vector(self, counts: dict[tuple[str, ...], int]):
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(CIDER_N)]
        norm = [0.0] * CIDER_N
        length = 0
        for gram, tf in counts.items():
            idf = self._idf.get(gram)
            if idf is None:  # np.log as COCO calls it (libm and numpy may differ in the last bit)
                df = max(1.0, self.df.get(gram, 0.0))
                idf = self._idf[gram] = float(self.ref_len - np.log(df))
            n = len(gram) - 1
            # Plain floats: the same IEEE operations as COCO's numpy scalars, ~5x faster.
            vec[n][gram] = value = float(tf) * idf
            norm[n] += pow(value, 2)
            if n == 1:  # COCO's "length" counts bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def _sim(self, hyp, ref) -> list[float]:
        (vec_h, norm_h, len_h), (vec_r, norm_r, len_r) = hyp, ref
        delta = float(len_h - len_r)
        val = [0.0] * CIDER_N
        for n in range(CIDER_N):
            for gram, value in vec_h[n].items():
                ref_value = vec_r[n].get(gram, 0.0)
                val[n] += min(value, ref_value) * ref_value
            if norm_h[n] != 0 and norm_r[n] != 0:
                val[n] /= norm_h[n] * norm_r[n]
            val[n] *= math.e ** (-(delta**2) / (2 * CIDER_SIGMA**2))
        return val

    def instance(self, index: int, hypothesis: str) -> float:
        """CIDEr-D of ``hypothesis`` against the references of instance ``index``."""
        hyp = self._vector(_ngrams(hypothesis))
        score = [0.0] * CIDER_N
        refs = self.ref_counts[index]
        for counts in refs:
            sim = self._sim(hyp, self._vector(counts))
            score = [s + x for s, x in zip(score, sim, strict=True)]
        avg = np.mean(np.array(score))
        avg /= len(refs)
        return float(avg * 10.0)

    def score(self, hypotheses: Sequence[str]) -> tuple[float, list[float]]:
        scores = [self.instance(i, h) for i, h in enumerate(hypotheses)]
        return float(np.mean(np.array(scores))), scores


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D (document frequencies from ``references``) and instance scores."""
    return CiderD(references).score(hypotheses)


# --- METEOR ---------------------------------------------------------------------------
def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (METEOR needs it)."""
    return shutil.which("java") is not None


def meteor_dir() -> Path | None:
    """Folder of pycocoevalcap's METEOR jar (and its paraphrase table), if installed."""
    spec = importlib.util.find_spec("pycocoevalcap")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "meteor"
        if (folder / METEOR_JAR).is_file():
            return folder
    return None


class MeteorProcess:
    """One long-lived ``meteor-1.5.jar -stdio`` process (it loads its tables in seconds)."""

    def __init__(self) -> None:
        folder = meteor_dir()
        if folder is None:
            raise FileNotFoundError("meteor-1.5.jar not found in the pycocoevalcap package")
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            ["java", *JVM_OPTIONS, *METEOR_ARGS],
            cwd=folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _error(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self.proc.poll()}"

    def score(
        self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]
    ) -> tuple[float, list[float]]:
        """Corpus METEOR and segment scores, exchanging the lines COCO's wrapper sends."""
        score_lines = []
        for hyp, refs in zip(hypotheses, references, strict=True):
            hyp = hyp.replace("|||", "").replace("  ", " ")  # as COCO's Meteor._stat
            score_lines.append(" ||| ".join(("SCORE", " ||| ".join(refs), hyp)) + "\n")
        with self.lock:
            stats = self._exchange(score_lines, len(score_lines))
            eval_line = "EVAL" + "".join(f" ||| {s}" for s in stats) + "\n"
            result = self._exchange([eval_line], len(stats) + 1)
        return float(result[-1]), [float(x) for x in result[:-1]]

    def _exchange(self, lines: list[str], expect: int) -> list[str]:
        # Write from a thread while reading here, so neither pipe can fill up and block.
        def write() -> None:
            try:
                for line in lines:
                    self.proc.stdin.write(line.encode("utf-8"))
                self.proc.stdin.flush()
            except OSError:
                pass  # the process died; the reader reports it

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        out = []
        for _ in range(expect):
            line = self.proc.stdout.readline()
            if not line:
                writer.join()
                raise RuntimeError(f"METEOR stopped: {self._error()}")
            out.append(line.decode("utf-8").strip())
        writer.join()
        return out

    def close(self) -> None:
        if self.alive():
            self.proc.stdin.close()
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


_meteor: MeteorProcess | None = None
_meteor_lock = threading.Lock()


def meteor_process() -> MeteorProcess:
    """The shared METEOR process, started on first use (and again if it died)."""
    global _meteor
    with _meteor_lock:
        if _meteor is None or not _meteor.alive():
            if _meteor is not None:
                _meteor.close()
            _meteor = MeteorProcess()
        return _meteor


@atexit.register
def _close_meteor() -> None:
    if _meteor is not None:
        _meteor.close()


def meteor(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus METEOR 1.5 (``-l en -norm``) and segment scores of tokenised text."""
    return meteor_process().score(hypotheses, references)
