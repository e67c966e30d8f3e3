"""ROUGE-L and CIDEr-D of peftrun.metrics.coco against pycocoevalcap's own scorers, on E2E test.

    python scripts/bench_coco.py              # 630 test MRs, 3 output sets, best of 3 runs
    python scripts/bench_coco.py --repeat 5

References: ``peftrun.data.e2e.load_instances("test")`` (grouped as the official scorer
groups them).  Outputs: ``tests/metrics/fixtures/*.txt`` and each MR's first reference.
Both sides get the same PTB-tokenised text (``coco.tokenize``); pycocoevalcap gets it as
COCOEvalCap passes it (dicts keyed by instance id, one hypothesis in a list per id).
Prints, per scorer and output set, the best wall time of each side and the largest
absolute difference of the corpus score and of the per-instance scores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

from peftrun.data.e2e import load_instances  # noqa: E402
from peftrun.metrics import coco  # noqa: E402

FIXTURES = REPO / "tests" / "metrics" / "fixtures"


def library(scorer, hyps: list[str], refs: list[list[str]]) -> tuple[float, np.ndarray]:
    gts = {i: list(r) for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    return scorer().compute_score(gts, res)


def best(repeat: int, fn, *args):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per scorer (best is shown)")
    args = parser.parse_args()

    raw_refs = [list(inst.references) for inst in load_instances("test")]
    systems = {
        p.stem: [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
        for p in sorted(FIXTURES.glob("*.txt"))
    }
    systems["first_ref"] = [r[0].strip() for r in raw_refs]
    print(f"{len(raw_refs)} instances, {sum(map(len, raw_refs))} references")
    print(
        f"{'scorer':<8} {'outputs':<15} {'peftrun s':>9} {'pycoco s':>9} {'ratio':>6} "
        f"{'corpus diff':>11} {'inst diff':>9}"
    )
    for name, outputs in systems.items():
        hyps, refs = coco.tokenize(outputs, raw_refs)
        for metric, ours, theirs in (("ROUGE_L", coco.rouge_l, Rouge), ("CIDEr", coco.cider_d, Cider)):
            t_ours, (c_ours, p_ours) = best(args.repeat, ours, hyps, refs)
            t_lib, (c_lib, p_lib) = best(args.repeat, library, theirs, hyps, refs)
            corpus_diff = abs(c_ours - float(c_lib))
            inst_diff = float(np.max(np.abs(np.asarray(p_ours, dtype=np.float64) - p_lib)))
            print(
                f"{metric:<8} {name:<15} {t_ours:>9.3f} {t_lib:>9.3f} {t_lib / t_ours:>5.1f}x "
                f"{corpus_diff:>11.3g} {inst_diff:>9.3g}"
            )


if __name__ == "__main__":
    main()
