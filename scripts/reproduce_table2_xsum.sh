#!/usr/bin/env bash
# Li & Liang (ACL 2021) Table 2: every method on XSum, BART-large (11 runs).
# On a GPU box: runs configs/sweeps/table2-xsum.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/table2-xsum.md.
# Usage: scripts/reproduce_table2_xsum.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# XSum data: the hub's EdinburghNLP/xsum by default; local files with
#   data.files.train=PATH data.files.dev=PATH data.files.test=PATH (JSONL or parquet).
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
status=0
peftrun sweep configs/sweeps/table2-xsum.yaml --root "$root" "$@" || status=$?
[[ -f "$root/table2-xsum/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/table2-xsum" --split test --format md --out results/table2-xsum.md
exit "$status" # non-zero when a run failed (the table then lacks it)
