"""Benchmark the E2E metric suite on the 630-instance test set (and, optionally, the official scorer).

    python scripts/bench_metrics.py                       # peftrun only, first references as outputs
    python scripts/bench_metrics.py --outputs sys.txt     # one output per line, test-set order
    python scripts/bench_metrics.py --official ~/e2e-metrics/measure_scores.py \\
        --official-python ~/venvs/e2e/bin/python          # also time tuetschek/e2e-metrics

The official scorer needs its own dependencies (future, matplotlib, scikit-image) and its
jars; it runs twice (default Perl BLEU/NIST, then ``-p``).  Its table only prints 4
decimals, so the comparison column is rounded.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from peftrun.data import e2e  # noqa: E402
from peftrun.data.references import read_references  # noqa: E402
from peftrun.metrics.e2e import METRICS, score_e2e  # noqa: E402


def run_official(script: Path, python: str, refs: Path, outputs: Path, *flags: str) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [python, str(script), *flags, str(refs), str(outputs)],
        cwd=script.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - start
    scores = {m: float(v) for m, v in re.findall(r"^(\w+): ([0-9.]+)$", proc.stdout, re.M)}
    return scores, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--refs", type=Path, help="E2E CSV with mr,ref columns (default: the packaged official test set)"
    )
    parser.add_argument("--outputs", type=Path, help="system outputs, one per line (default: first refs)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs (the first starts METEOR's JVM)")
    parser.add_argument("--official", type=Path, help="path to e2e-metrics measure_scores.py to time too")
    parser.add_argument(
        "--official-python", default=sys.executable, help="interpreter for the official scorer"
    )
    args = parser.parse_args()
    if args.official and not args.refs:
        parser.error("--official needs --refs (the official scorer reads the references from a file)")

    if args.refs:
        refs = read_references(args.refs)  # grouped by consecutive MR, as the official scorer does
    else:
        refs = [list(instance.references) for instance in e2e.load_instances("test")]
    if args.outputs:
        outputs = [line.strip() for line in args.outputs.read_text(encoding="utf-8").splitlines()]
    else:
        outputs = [r[0].strip() for r in refs]
    print(f"{len(outputs)} outputs, {sum(map(len, refs))} references")

    times = []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        report = score_e2e(outputs, refs)
        times.append(time.perf_counter() - start)
    for note in report.notes:
        print("note:", note)

    official: dict[str, float] = {}
    official_times: list[str] = []
    if args.official:
        with tempfile.TemporaryDirectory() as tmp:
            sys_file = Path(tmp) / "outputs.txt"
            sys_file.write_text("".join(o + "\n" for o in outputs), encoding="utf-8")
            perl, t_perl = run_official(args.official, args.official_python, args.refs, sys_file)
            py, t_py = run_official(args.official, args.official_python, args.refs, sys_file, "-p")
        official = dict(perl)
        official.update({"BLEU_py": py["BLEU"], "NIST_py": py["NIST"]})
        official_times = [f"official default: {t_perl:.1f} s", f"official -p: {t_py:.1f} s"]

    print(f"\n{'metric':<9} {'peftrun':>20} {'official (4 dp)':>16} {'diff':>9}")
    for metric in METRICS:
        ours = report.scores[metric]
        theirs = official.get(metric)
        ours_s = "None" if ours is None else f"{ours:.15g}"
        theirs_s = "" if theirs is None else f"{theirs:.4f}"
        diff = "" if ours is None or theirs is None else f"{round(ours, 4) - theirs:+.4f}"
        print(f"{metric:<9} {ours_s:>20} {theirs_s:>16} {diff:>9}")
    print("\nwall time, whole suite (7 scores):")
    for i, t in enumerate(times):
        label = "peftrun, cold (starts METEOR's JVM)" if i == 0 else "peftrun, warm (JVM reused)"
        print(f"  {label}: {t:.1f} s")
    for line in official_times:
        print(f"  {line}")


if __name__ == "__main__":
    main()
