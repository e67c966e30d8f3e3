#!/usr/bin/env bash
# Li & Liang (ACL 2021) Table 5: every-layer prefix vs embedding-only vs infix, E2E (7 runs).
# On a GPU box: runs configs/sweeps/embedding-vs-infix-e2e.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/embedding-vs-infix-e2e.md.
# Usage: scripts/reproduce_embedding_vs_infix_e2e.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# The key=value overrides apply to every run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
status=0
peftrun sweep configs/sweeps/embedding-vs-infix-e2e.yaml --root "$root" "$@" || status=$?
[[ -f "$root/embedding-vs-infix-e2e/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/embedding-vs-infix-e2e" --split test --format md --out results/embedding-vs-infix-e2e.md
exit "$status" # non-zero when a run failed (the table then lacks it)
