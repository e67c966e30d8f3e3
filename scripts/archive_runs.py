"""Keep a study's text outputs (everything `peftrun report` reads, no weights) in a folder that can be
committed, e.g. docs/results/runs/, so that its tables and significance tests can be recomputed
without retraining:

    python scripts/archive_runs.py runs/smollm2-methods-e2e docs/results/runs/smollm2-methods-e2e

For every run directory under SOURCE: config.yaml, config.resolved.yaml, meta.json, train_log.jsonl,
DONE, metrics/*.json, predictions/*.jsonl (the .txt twins are the same outputs, one per line, and
are left out) and the same of each re-decode under decodes/NAME/; for every sweep folder its
sweep.json and selection.json. Checkpoints, adapters, logs and trackers stay behind. The copy keeps
the folder layout, so `peftrun report DEST` gives the tables `peftrun report SOURCE` gives.
Re-running copies what changed (files are compared by content).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

RUN_FILES = ("config.yaml", "config.resolved.yaml", "meta.json", "train_log.jsonl", "DONE")
RUN_GLOBS = ("metrics/*.json", "predictions/*.jsonl")
SWEEP_FILES = ("sweep.json", "selection.json")


def text_outputs(source: Path) -> list[Path]:
    """The files to keep, relative to `source`."""
    keep: list[Path] = []
    for resolved in sorted(source.rglob("config.resolved.yaml")):
        run = resolved.parent
        if "checkpoints" in run.relative_to(source).parts:
            continue
        for folder in [run, *sorted((run / "decodes").glob("*"))]:
            keep += [folder / name for name in (*RUN_FILES, "decode.yaml") if (folder / name).is_file()]
            keep += [path for pattern in RUN_GLOBS for path in sorted(folder.glob(pattern))]
    keep += [path for name in SWEEP_FILES for path in sorted(source.rglob(name))]
    return sorted({path.relative_to(source) for path in keep})


def archive(source: Path, dest: Path) -> tuple[int, int]:
    """Copy the text outputs; (files copied, bytes kept)."""
    copied = total = 0
    for relative in text_outputs(source):
        src, dst = source / relative, dest / relative
        total += src.stat().st_size
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied += 1
    return copied, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a folder of run directories (a sweep's, or several)")
    parser.add_argument("dest", type=Path, help="where the text outputs go (created)")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"archive_runs: {args.source} is not a folder", file=sys.stderr)
        return 2
    copied, total = archive(args.source, args.dest)
    print(f"kept {total / 1e6:.2f} MB of text outputs in {args.dest} ({copied} files copied)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
