#!/usr/bin/env bash
# Li & Liang (ACL 2021) low-data setting, XSum: prefix vs FT at 50-500 examples (80 runs).
# On a GPU box: runs configs/sweeps/lowdata-xsum.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/lowdata-xsum.md and its plots in results/lowdata-xsum/.
# Usage: scripts/reproduce_lowdata_xsum.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# XSum data: the hub's EdinburghNLP/xsum by default; local files with
#   data.files.train=PATH data.files.dev=PATH data.files.test=PATH (JSONL or parquet).
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
status=0
peftrun sweep configs/sweeps/lowdata-xsum.yaml --root "$root" "$@" || status=$?
[[ -f "$root/lowdata-xsum/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/lowdata-xsum" --split test --format md --out results/lowdata-xsum.md --plots results/lowdata-xsum/
exit "$status" # non-zero when a run failed (the table then lacks it)
