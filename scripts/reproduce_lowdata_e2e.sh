#!/usr/bin/env bash
# Li & Liang (ACL 2021) low-data setting, E2E: prefix vs FT at 50-500 examples (80 runs).
# On a GPU box: runs configs/sweeps/lowdata-e2e.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/lowdata-e2e.md and its plots in results/lowdata-e2e/.
# Usage: scripts/reproduce_lowdata_e2e.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# The key=value overrides apply to every run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
status=0
peftrun sweep configs/sweeps/lowdata-e2e.yaml --root "$root" "$@" || status=$?
[[ -f "$root/lowdata-e2e/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/lowdata-e2e" --split test --format md --out results/lowdata-e2e.md --plots results/lowdata-e2e/
exit "$status" # non-zero when a run failed (the table then lacks it)
