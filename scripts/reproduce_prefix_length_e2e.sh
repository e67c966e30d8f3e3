#!/usr/bin/env bash
# Li & Liang (ACL 2021) Figure 4 (right): prefix length vs performance, E2E (5 runs).
# On a GPU box: runs configs/sweeps/prefix-length-e2e.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/prefix-length-e2e.md and its plots in results/prefix-length-e2e/.
# Usage: scripts/reproduce_prefix_length_e2e.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# The key=value overrides apply to every run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
status=0
peftrun sweep configs/sweeps/prefix-length-e2e.yaml --root "$root" "$@" || status=$?
[[ -f "$root/prefix-length-e2e/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/prefix-length-e2e" --split test --format md --out results/prefix-length-e2e.md --plots results/prefix-length-e2e/
exit "$status" # non-zero when a run failed (the table then lacks it)
