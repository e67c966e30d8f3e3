#!/usr/bin/env bash
# Li & Liang (ACL 2021) Figure 5: prefix initialised from real words vs random, low-data E2E (90 runs).
# On a GPU box: runs configs/sweeps/init-phrases-e2e.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/init-phrases-e2e.md and its plots in results/init-phrases-e2e/.
# Usage: scripts/reproduce_init_phrases_e2e.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# The key=value overrides apply to every run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
status=0
peftrun sweep configs/sweeps/init-phrases-e2e.yaml --root "$root" "$@" || status=$?
[[ -f "$root/init-phrases-e2e/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/init-phrases-e2e" --split test --format md --out results/init-phrases-e2e.md --plots results/init-phrases-e2e/
exit "$status" # non-zero when a run failed (the table then lacks it)
