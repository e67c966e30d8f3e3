#!/usr/bin/env bash
# Li & Liang (ACL 2021) Table 1: every method on E2E, GPT-2-medium (11 runs).
# On a GPU box: runs configs/sweeps/table1-e2e.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/table1-e2e.md.
# Usage: scripts/reproduce_table1_e2e.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# The key=value overrides apply to every run (e.g. train.precision=bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
status=0
peftrun sweep configs/sweeps/table1-e2e.yaml --root "$root" "$@" || status=$?
[[ -f "$root/table1-e2e/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/table1-e2e" --split test --format md --out results/table1-e2e.md
exit "$status" # non-zero when a run failed (the table then lacks it)
