#!/usr/bin/env bash
# Li & Liang (ACL 2021) Figure 4 (left): prefix length vs performance, XSum (5 runs).
# On a GPU box: runs configs/sweeps/prefix-length-xsum.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/prefix-length-xsum.md and its plots in results/prefix-length-xsum/.
# Usage: scripts/reproduce_prefix_length_xsum.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# XSum data: the hub's EdinburghNLP/xsum by default; local files with
#   data.files.train=PATH data.files.dev=PATH data.files.test=PATH (JSONL or parquet).
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
status=0
peftrun sweep configs/sweeps/prefix-length-xsum.yaml --root "$root" "$@" || status=$?
[[ -f "$root/prefix-length-xsum/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/prefix-length-xsum" --split test --format md --out results/prefix-length-xsum.md --plots results/prefix-length-xsum/
exit "$status" # non-zero when a run failed (the table then lacks it)
