#!/usr/bin/env bash
# The laptop study of Li & Liang's claims on SmolLM2-135M, E2E (configs/sweeps/smollm2/README.md):
# methods side by side (18 runs), low data (27), prefix length (4), initialisation (12): 61 runs,
# about 4.5 hours on a 2-core CPU. Runs the four sweeps one after another (one run at a time), then
# writes each study's table and figures into docs/results/.
# Resumable: re-running skips DONE runs and resumes interrupted ones, so run it in the background
# across sittings, e.g.
#   nohup scripts/reproduce_smollm2_study.sh > smollm2-study.log 2>&1 &
# and start it again after an interruption. A failed run does not stop the others; the script then
# exits non-zero and the tables list the run as failed.
# Usage: scripts/reproduce_smollm2_study.sh [ROOT] [key=value ...]   (ROOT: parent of the sweeps' folders,
# default runs; the key=value overrides apply to every run). WORKERS=2 OMP_NUM_THREADS=1 runs two runs
# at a time with one thread each (more runs per hour on 2 cores than one run with two threads).
set -euo pipefail
cd "$(dirname "$0")/.."
root=runs
if [[ $# -gt 0 && $1 != *=* ]]; then root=$1; shift; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
out=docs/results
mkdir -p "$out"
status=0
for study in methods-e2e lowdata-e2e prefix-length-e2e init-e2e; do
  echo "== $(date -u +%FT%TZ) smollm2-$study"
  peftrun sweep "configs/sweeps/smollm2/$study.yaml" --root "$root" --workers "${WORKERS:-1}" "$@" || status=$?
done
report() { # FOLDER SPLIT NAME [options]: a table (md) and its figures, if any run of it finished
  local folder=$root/$1 split=$2 name=$3
  shift 3
  [[ -f "$folder/sweep.json" ]] || { echo "no $folder/sweep.json: $name not reported"; status=1; return; }
  peftrun report "$folder" --split "$split" --format md --out "$out/$name.md" "$@" || status=$?
}
# Comparison tables: the fixed first 128 dev MRs, greedy. E2E BLEU/NIST by the official mteval
# (--bleu perl, the default). Each table's best row is tested against every other row by a paired
# bootstrap over the MRs (peftrun report's significance column), 1000 resamples. Rows: the config
# keys that vary (report's default), seeds and subsets collapsed into mean ± std (n); the figures
# plot each metric against data.train_size / method.prefix_len where those vary.
report smollm2-methods-e2e dev smollm2-methods-e2e-dev --by method.kind,method.variant,train.epochs
report smollm2-lowdata-e2e dev smollm2-lowdata-e2e --plots "$out/smollm2-lowdata-e2e/"
report smollm2-prefix-length-e2e dev smollm2-prefix-length-e2e --plots "$out/smollm2-prefix-length-e2e/"
report smollm2-init-e2e dev smollm2-init-e2e --plots "$out/smollm2-init-e2e/"
# The paper's pairwise claims on the methods study: two rows each, the better tested against the
# other by the same paired bootstrap (the final test MRs, and dev).
claim() { # NAME SPLIT RUN_DIR... : one claim's two-row table
  local name=$1 split=$2
  shift 2
  peftrun report "$@" --split "$split" --format md --out "$out/claims/$name-$split.md" || status=$?
}
m=$root/smollm2-methods-e2e
for split in dev test; do
  claim prefix-vs-full "$split" "$m"/kind=prefix-lr=0.005-prefix_len=10-seed* "$m"/kind=full-precision=bf16-*
  claim prefix-vs-adapter "$split" "$m"/kind=prefix-lr=0.005-prefix_len=10-seed* "$m"/kind=adapter-*
  claim top2-vs-full "$split" "$m"/kind=top-k-* "$m"/kind=full-precision=bf16-*
  claim prefix-vs-embedding-only "$split" "$m"/kind=prefix-lr=0.005-*
  claim prefix-vs-icl "$split" "$m"/kind=prefix-lr=0.005-prefix_len=10-seed* "$m"/kind=icl-*
  claim prefix-vs-lora "$split" "$m"/kind=prefix-lr=0.005-prefix_len=10-seed* "$m"/kind=lora-*
done
# The final table: the same methods on the first 128 test MRs (decoded by the same runs; no choice
# was made on them).
report smollm2-methods-e2e test smollm2-methods-e2e-test --by method.kind,method.variant,train.epochs
exit "$status"
