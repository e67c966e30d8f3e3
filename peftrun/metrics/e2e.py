"""The E2E NLG challenge metric suite: BLEU, NIST, METEOR, ROUGE-L, CIDEr.

Matches the official scorer, tuetschek/e2e-metrics ``measure_scores.py`` (Novikova,
Dušek & Rieser, 2017; Dušek, Novikova & Rieser, 2020), on the same inputs:

* ``BLEU`` / ``NIST``: its default mode, NIST's mteval-v13a Perl script;
  ``BLEU_py`` / ``NIST_py``: its ``-p`` mode (pymteval), which the Prefix-Tuning paper
  used.  See :mod:`peftrun.metrics.mteval`.
* ``METEOR`` / ``ROUGE_L`` / ``CIDEr``: the COCO caption code it bundles, after COCO's PTB
  tokenisation.  See :mod:`peftrun.metrics.coco`.  Only METEOR needs Java; without it
  METEOR is None and a note says how to install Java.

Scores are on the scorer's raw scale (BLEU 0.6925, not 69.25).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from peftrun.errors import PeftrunError
from peftrun.metrics import coco, mteval

METRICS = ("BLEU", "NIST", "BLEU_py", "NIST_py", "METEOR", "ROUGE_L", "CIDEr")
JAVA_HINT = "METEOR needs Java: apt-get install -y default-jre-headless"

# measure_scores.py repairs these encoding errors in every line of a CSV/TSV file it reads
# (the references); system outputs given as plain text are read as they are.
_MOJIBAKE = (("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é"))


@dataclass
class MetricReport:
    """Corpus scores (None where not computable), per-instance scores, notes, scorer info."""

    scores: dict[str, float | None]
    per_example: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scorers: dict[str, str] = field(default_factory=dict)


def java_available() -> bool:
    """Whether METEOR can run (a ``java`` executable is on PATH)."""
    return coco.java_available()


def prestart_meteor() -> None:
    """Start METEOR's JVM now, in the background (e.g. when training starts).

    Loading its paraphrase tables takes several seconds; a later :func:`score_e2e` then
    finds the process ready.  Does nothing without Java.
    """
    if java_available():
        try:
            coco.meteor_process()
        except OSError:
            pass  # score_e2e reports it


def one_line(text: str) -> str:
    """The scorer reads one text per line, so no text it scores contains a line break."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def repair_reference(text: str) -> str:
    """Repair the encoding errors the scorer's CSV reader repairs; no line breaks."""
    for bad, good in _MOJIBAKE:
        text = text.replace(bad, good)
    return one_line(text)


def _check(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], metrics: tuple[str, ...] | None
) -> tuple[str, ...]:
    if len(hypotheses) != len(references):
        raise PeftrunError(f"expected {len(references)} outputs, got {len(hypotheses)}")
    if not references:
        raise PeftrunError("no instances to score: expected at least one output")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise PeftrunError(f"instance {i} needs a list of one or more references")
    wanted = METRICS if metrics is None else tuple(metrics)
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise PeftrunError(f"unknown E2E metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    return wanted


def _scorer_names() -> dict[str, str]:
    try:
        coco_version = importlib.metadata.version("pycocoevalcap")
    except importlib.metadata.PackageNotFoundError:
        coco_version = "?"
    perl = "re-implementation of mteval-v13a-sig.pl (E2E default): 13a tokens, ASCII lower-case"
    return {
        "BLEU": f"{perl}, closest-ref brevity penalty, mteval smoothing, N=4",
        "NIST": f"{perl}, N=5, info weights from the references, mteval length penalty",
        "BLEU_py": "re-implementation of e2e-metrics pymteval.py (measure_scores.py -p), N=4",
        "NIST_py": "re-implementation of e2e-metrics pymteval.py (measure_scores.py -p), N=5",
        "tokenizer": "Python port of CoreNLP 3.4.1 PTBTokenizer -preserveLines -lowerCase, "
        "COCO punctuation removal (METEOR, ROUGE_L, CIDEr)",
        "METEOR": f"pycocoevalcap {coco_version} {coco.METEOR_JAR}: java {' '.join(coco.METEOR_ARGS[1:])}",
        "ROUGE_L": "re-implementation of COCO rouge.py (bit-parallel LCS, equal to pycocoevalcap "
        f"{coco_version} Rouge): max P and max R over refs, F with beta=1.2, mean",
        "CIDEr": f"pycocoevalcap {coco_version} Cider (CIDEr-D): n=1..4, sigma=6, "
        "df from the evaluated references, mean",
    }


def score_e2e(
    hypotheses: list[str], references: list[list[str]], *, metrics: tuple[str, ...] | None = None
) -> MetricReport:
    """Score ``hypotheses[i]`` against all of ``references[i]`` with the E2E metric suite.

    ``metrics`` picks a subset of :data:`METRICS` (default: all).  Raises
    :class:`PeftrunError` for a length mismatch or an instance without references.
    """
    wanted = _check(hypotheses, references, metrics)
    notes: list[str] = []
    hyps = [one_line(h) for h in hypotheses]
    refs = [[repair_reference(r) for r in rs] for rs in references]
    changed = sum(h != o for h, o in zip(hyps, hypotheses, strict=True))
    changed += sum(
        r != o for rs, os in zip(refs, references, strict=True) for r, o in zip(rs, os, strict=True)
    )
    if changed:
        notes.append(
            f"{changed} texts had line breaks (or references had mojibake such as Â£) that "
            "the official scorer's file readers cannot see; replaced them as it would"
        )
    empty = sum(1 for h in hyps if not h.strip())
    if empty:
        notes.append(f"{empty} of {len(hyps)} outputs are empty; scored as empty strings")

    scores: dict[str, float | None] = {m: None for m in wanted}
    per_example: dict[str, list[float]] = {}
    meteor_proc = None
    if "METEOR" in wanted:
        if not java_available():
            notes.append(JAVA_HINT)
        else:
            try:  # start now: the JVM loads its tables while Python does the rest
                meteor_proc = coco.meteor_process()
            except (OSError, FileNotFoundError) as err:
                notes.append(f"METEOR could not start ({err}); {JAVA_HINT}")

    meteor_job: Future | None = None
    with ThreadPoolExecutor(max_workers=1) as background:
        if any(m in wanted for m in ("METEOR", "ROUGE_L", "CIDEr")):
            tok_hyps, tok_refs = coco.tokenize(hyps, refs)
            if meteor_proc is not None:  # METEOR (Java) scores while Python does the rest
                meteor_job = background.submit(meteor_proc.score, tok_hyps, tok_refs)
            if "ROUGE_L" in wanted:
                scores["ROUGE_L"], per_example["ROUGE_L"] = coco.rouge_l(tok_hyps, tok_refs)
            if "CIDEr" in wanted:
                scores["CIDEr"], per_example["CIDEr"] = coco.cider_d(tok_hyps, tok_refs)

        if any(m in wanted for m in ("BLEU", "NIST", "BLEU_py", "NIST_py")):
            stats = mteval.instance_stats(hyps, refs)
            for name, value in mteval.corpus_scores(stats).items():
                if name in wanted:
                    scores[name] = value
            per_example["sentBLEU"] = [mteval.sentence_bleu(row) for row in stats.bleu_perl]

        if meteor_job is not None:
            try:
                scores["METEOR"], per_example["METEOR"] = meteor_job.result()
            except (OSError, RuntimeError, ValueError) as err:
                notes.append(f"METEOR failed: {err}")

    scorers = {k: v for k, v in _scorer_names().items() if k in wanted or k == "tokenizer"}
    return MetricReport(scores=scores, per_example=per_example, notes=notes, scorers=scorers)
