#!/usr/bin/env bash
# The laptop study of Li & Liang's claims on SmolLM2-135M, E2E (configs/sweeps/smollm2/README.md):
# methods side by side (18 runs), low data (27), prefix length (3), initialisation (6): 54 runs,
# about 4.2 hours on a 2-core CPU. Runs the four sweeps one after another (one run at a time), then
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
report() { # FOLDER SPLIT NAME [RUN_DIR... options]: a table (md) and its figures, if any run finished
  local folder=$root/$1 split=$2 name=$3
  shift 3
  [[ -f "$folder/sweep.json" ]] || { echo "no $folder/sweep.json: $name not reported"; status=1; return; }
  peftrun report "$folder" "$@" --split "$split" --format md --out "$out/$name.md" || status=$?
}
# Comparison tables: the fixed first 128 dev MRs, greedy. E2E BLEU/NIST by the official mteval
# (--bleu perl, the default). Each table's best row is tested against every other row by a paired
# bootstrap over the MRs (peftrun report's significance column), 1000 resamples. Rows: the config
# keys that vary (report's default), seeds and subsets collapsed into mean ± std (n); the figures
# plot each metric against data.train_size / method.prefix_len where those vary.
report smollm2-methods-e2e dev smollm2-methods-e2e-dev --by method.kind,method.variant,train.epochs
report smollm2-lowdata-e2e dev smollm2-lowdata-e2e --by method.kind,data.train_size \
  --plots "$out/smollm2-lowdata-e2e/"
# A point two studies share runs once: the length study's L=10 is the methods study's prefix run at
# seed 101; the init study's "table-to-text:" point is the low-data study's prefix at 50 pairs.
length_10=$root/smollm2-methods-e2e/kind=prefix-lr=0.005-prefix_len=10-seed101
init_phrase_runs=("$root"/smollm2-lowdata-e2e/kind=prefix-*-train_size=50-subset_seed=[01]-*)  # init-e2e.yaml's subsets
report smollm2-prefix-length-e2e dev smollm2-prefix-length-e2e "$length_10" --by method.prefix_len \
  --plots "$out/smollm2-prefix-length-e2e/"
report smollm2-init-e2e dev smollm2-init-e2e "${init_phrase_runs[@]}" --by method.init_phrase,method.prefix_len \
  --plots "$out/smollm2-init-e2e/"
# The paper's pairwise claims: two rows each, the better tested against the
# other by the same paired bootstrap (the final test MRs, and dev).
claim() { # NAME SPLIT RUN_DIR... [--by KEYS]: one claim's two-row table
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
# Low data (dev only): at each training size, the prefix against full fine-tuning and against LoRA,
# the three subsets pooled. Initialisation: each real phrase against the random prefix of its length,
# and the two phrases against each other.
l=$root/smollm2-lowdata-e2e
for n in 50 100 200; do
  claim "lowdata-$n-prefix-vs-full" dev "$l"/kind=prefix-*-train_size=$n-* "$l"/kind=full-*-train_size=$n-* \
    --by method.kind
  claim "lowdata-$n-prefix-vs-lora" dev "$l"/kind=prefix-*-train_size=$n-* "$l"/kind=lora-*-train_size=$n-* \
    --by method.kind
  claim "lowdata-$n-full-vs-lora" dev "$l"/kind=full-*-train_size=$n-* "$l"/kind=lora-*-train_size=$n-* \
    --by method.kind
done
i=$root/smollm2-init-e2e
by_init=(--by method.init_phrase,method.prefix_len)
claim init-table-to-text-vs-random dev "${init_phrase_runs[@]}" "$i"/prefix_len=6-* "${by_init[@]}"
claim init-elephant-vs-random dev "$i"/*-init_phrase=elephant-* "$i"/prefix_len=1-* "${by_init[@]}"
claim init-table-to-text-vs-elephant dev "${init_phrase_runs[@]}" "$i"/*-init_phrase=elephant-* "${by_init[@]}"
# The final table: the same methods on the first 128 test MRs (decoded by the same runs; no choice
# was made on them).
report smollm2-methods-e2e test smollm2-methods-e2e-test --by method.kind,method.variant,train.epochs
exit "$status"
