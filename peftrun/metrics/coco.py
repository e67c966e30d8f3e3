"""METEOR 1.5, ROUGE-L and CIDEr-D as the COCO caption evaluation code computes them.

The E2E scorer passes references and outputs through pycocoevalcap: all text is first
PTB-tokenised, lower-cased and stripped of punctuation (``ptb_tokenizer``, pure Python
here), then:

* ROUGE-L (Lin, 2004; COCO ``rouge.py``): per instance, with LCS = longest common
  subsequence of whitespace-split tokens, P = max_r LCS/|hyp| and R = max_r LCS/|ref|
  taken *separately* over the references, F = (1 + b^2) P R / (R + b^2 P), b = 1.2;
  the corpus score is the mean over instances.  Computed here, not by pycocoevalcap's
  ``Rouge``, for speed only (see below); same arithmetic in the same order.
* CIDEr-D (Vedantam et al., 2015; COCO ``cider_scorer.py``): pycocoevalcap's own
  ``Cider`` (n = 1..4, sigma = 6), with document frequencies from the reference sets of
  the evaluated instances; its per-instance scores average to its corpus score.
* METEOR 1.5 (Denkowski & Lavie, 2014): the jar shipped in pycocoevalcap, started once
  as COCO starts it (``-l en -norm``, ``-stdio``); the corpus score is METEOR's own
  aggregate over all segment statistics (not the mean of segment scores).

Why ROUGE-L is not pycocoevalcap's ``Rouge``: it fills an |r| x |h| LCS table in pure
Python for every reference; ``lcs_length`` here is bit-parallel.  Measured with
``python scripts/bench_coco.py`` (630 E2E test instances, 4,693 references, three output
sets, 2 CPU cores): ``Rouge.compute_score`` 1.0-1.3 s per call, ``rouge_l`` 0.05-0.08 s
(15-23x), with identical corpus and per-instance scores (difference 0).  The Python part
of the E2E suite (``score_e2e`` without METEOR, 3.8 s CPU) would take 5.2 s with it
(+35%), and a bootstrap scores two systems.  ``tests/metrics/test_coco.py`` checks
``rouge_l`` against ``Rouge`` itself, on real E2E outputs and on random token strings.

CIDEr-D used to be a copy of ``cider_scorer.py`` too; it was 1.6-1.8x faster (1.1-1.3 s
against 1.9-2.3 s per call, +0.9 s CPU on the suite; ``scripts/bench_coco.py`` at commit
0f303f6) with identical scores, which did not justify a second copy of the COCO code.
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocoevalcap.cider.cider import Cider

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
def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and instance scores of tokenised text: pycocoevalcap's ``Cider``.

    Document frequencies come from ``references`` alone, so two systems scored against the
    same references are weighted alike.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} reference sets")
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [hyp] for i, hyp in enumerate(hypotheses)}
    if not any(r.split() for refs in gts.values() for r in refs):
        # No reference n-gram at all: every cosine is 0, but pycocoevalcap fails (max() of
        # its empty document-frequency table).
        return 0.0, [0.0] * len(hypotheses)
    corpus, scores = Cider(n=CIDER_N, sigma=CIDER_SIGMA).compute_score(gts, res)
    return float(corpus), scores.tolist()


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
