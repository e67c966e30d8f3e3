#!/usr/bin/env bash
# Li & Liang (ACL 2021) Table 4: XSum topic extrapolation, prefix vs FT (4 runs).
# On a GPU box: runs configs/sweeps/extrapolation-xsum.yaml (one run per visible GPU at a time; re-running skips
# DONE runs and resumes the rest), then writes results/extrapolation-xsum.md.
# Usage: scripts/reproduce_extrapolation_xsum.sh [ROOT] [key=value ...]   (ROOT: parent of the sweep's folder, default runs)
# Needs data.url_file=PATH (the XSum authors' XSum-WebArxiveUrls.txt, github.com/EdinburghNLP/XSum);
#   data: the hub's EdinburghNLP/xsum by default, or data.files.train=PATH data.files.dev=PATH
#   data.files.test=PATH (JSONL or parquet).
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
urls=""
for arg in "$@"; do [[ $arg == data.url_file=* ]] && urls=${arg#*=}; done
if [[ -z $urls ]]; then
  echo "usage: $0 [ROOT] data.url_file=XSum-WebArxiveUrls.txt [data.files.train=PATH ...]" >&2
  exit 2
fi
status=0
peftrun sweep configs/sweeps/extrapolation-xsum.yaml --root "$root" "$@" || status=$?
[[ -f "$root/extrapolation-xsum/sweep.json" ]] || exit "$status" # refused before anything ran
mkdir -p results
peftrun report "$root/extrapolation-xsum" --split test --format md --out results/extrapolation-xsum.md
exit "$status" # non-zero when a run failed (the table then lacks it)
