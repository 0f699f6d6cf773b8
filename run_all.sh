#!/usr/bin/env bash
# Run every question of the study, then write the report results/README.md and results/manifest.json.
#
#   bash run_all.sh                                   # embedded data, full protocol, 3 seeds
#   bash run_all.sh --mlp-data ../shared/data/europe-course --cnn-data /data/whichfaceisreal
#   bash run_all.sh --force                           # retrain even what is cached
#
# A question that fails does not stop the others; the failures are listed at the end and the exit
# code is 1. Cached questions (same settings, same data, same code version) are reused, so a run
# that was interrupted picks up where it stopped.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash run_all.sh [--mlp-data DIR] [--cnn-data DIR] [--cnn-weights W] [--out DIR] [--seeds N]
                       [--device D] [--image-size N] [--cache-dir DIR] [--jobs 1|2] [--section 6|7|all]
                       [--force] [--quick]
  --mlp-data DIR    Section 6 CSV folder (default: the embedded data/europe)
  --cnn-data DIR    Section 7 ImageFolder (default: the generated real-vs-fake demo set)
  --cnn-weights W   pretrained ResNet18 for Section 7: imagenet, none or a state-dict file (default imagenet)
  --out DIR         results folder (default: results next to this script)
  --seeds N         seeds per setting (default 3)
  --device D        auto, cpu or cuda (default auto)
  --image-size N    Section 7 image size (default: 224 on real data, 96 on the demo set; see README)
  --cache-dir DIR   Section 7's demo images and decoded-tensor cache (default: cache/ next to this script)
  --jobs N          Section 6 questions run in N parallel lanes, 1 or 2 (default 2)
  --section S       run only Section 6 (mlp.py) or 7 (cnn.py); the report covers what exists (default all)
  --force           retrain every question even if a saved result matches
  --quick           the scripts' tiny test budget (for tests; never for results/)
EOF
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/results"
mlp_data="" cnn_data="" cnn_weights=imagenet cache_dir="$here/cache" image_size="" seeds=3 device=auto jobs=2
section=all force=() quick=()
while [ $# -gt 0 ]; do
  case "$1" in
    --mlp-data) mlp_data="$(cd "$2" && pwd)"; shift 2 ;;
    --cnn-data) cnn_data="$(cd "$2" && pwd)"; shift 2 ;;
    --cnn-weights) cnn_weights="$2"; shift 2 ;;
    --cache-dir) mkdir -p "$2"; cache_dir="$(cd "$2" && pwd)"; shift 2 ;;
    --out) mkdir -p "$2"; out="$(cd "$2" && pwd)"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --image-size) image_size="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --section) section="$2"; shift 2 ;;
    --force) force=(--force); shift ;;
    --quick) quick=(--quick); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$jobs" in 1|2) ;; *) echo "run_all.sh: --jobs must be 1 or 2" >&2; exit 2 ;; esac
case "$section" in 6|7|all) ;; *) echo "run_all.sh: --section must be 6, 7 or all" >&2; exit 2 ;; esac

[ -f "$cnn_weights" ] && cnn_weights="$(cd "$(dirname "$cnn_weights")" && pwd)/$(basename "$cnn_weights")"
# ${a[@]+"${a[@]}"}: an empty array under set -u, in every bash
mlp_args=(--out "$out" --seeds "$seeds" --device "$device" --quiet ${force[@]+"${force[@]}"}
          ${quick[@]+"${quick[@]}"})
[ -n "$mlp_data" ] && mlp_args+=(--data-dir "$mlp_data")
cnn_args=(--out "$out" --device "$device" --weights "$cnn_weights" --cache-dir "$cache_dir" --quiet
          ${force[@]+"${force[@]}"} ${quick[@]+"${quick[@]}"})
[ -n "$cnn_data" ] && cnn_args+=(--data-dir "$cnn_data")
# The demo images are generated at 96 px: run them at that size (ResNet18 x 5 lrs in about a minute on
# 2 cores); smaller, an antialiased resize would filter out most of their fake-image trace.
[ -z "$image_size" ] && [ -z "$cnn_data" ] && image_size=96
[ -n "$image_size" ] && cnn_args+=(--image-size "$image_size")

elapsed() { awk -v start="$1" -v end="$2" 'BEGIN { printf "%.1f", end - start }'; }

cd "$here"
logs="$out/logs"
mkdir -p "$logs"
times="$logs/times.tsv"
: > "$times"
start_all=$(date +%s.%N)

# run SCRIPT QUESTION: run one question, log to a file, print and record its wall time and status.
run() {
  local script="$1" question="$2" key="${1%.py}/$2" start end status
  local args=("${mlp_args[@]}")
  [ "$script" = cnn.py ] && args=("${cnn_args[@]}")
  start=$(date +%s.%N)
  if python "$script" --question "$question" "${args[@]}" > "$logs/${key//\//_}.log" 2>&1; then
    status=ok
  else
    status=failed
  fi
  end=$(date +%s.%N)
  printf '%s\t%s\t%s\n' "$key" "$(elapsed "$start" "$end")" "$status" >> "$times"
  printf '%-22s %7s s  %s\n' "$key" "$(elapsed "$start" "$end")" "$status"
  if [ "$status" = failed ]; then
    sed 's/^/    | /' "$logs/${key//\//_}.log" | tail -n 5
  fi
}

# Two lanes of about equal length; a question that reads another's models follows it in its lane.
lane_a() { run mlp.py depth_width; run mlp.py implicit; run mlp.py regions; run mlp.py lr; }
lane_b() { run mlp.py epochs; run mlp.py batchnorm; run mlp.py batch_size; run mlp.py gradients; run mlp.py residual; }
echo "logs in $logs"
if [ "$section" != 7 ]; then
  echo "Section 6"
  if [ "$jobs" = 2 ]; then
    lane_a & lane_b & wait
  else
    lane_a; lane_b
  fi
fi
if [ "$section" != 6 ]; then
  echo "Section 7"
  for question in xgb scratch linear_probe sklearn_probe finetune summary mistakes; do
    run cnn.py "$question"
  done
fi

total=$(elapsed "$start_all" "$(date +%s.%N)")
python common.py report --out "$out" --times "$times" --total "$total" --seeds "$seeds" \
  --mlp-data "${mlp_data:-embedded}" --cnn-data "${cnn_data:-embedded}" --image-size "${image_size:-224}"
echo "total $total s; report: $out/README.md"

failures=$(awk -F'\t' '$3 != "ok" {print $1}' "$times")
if [ -n "$failures" ]; then
  echo "failed questions (logs in $logs):"
  echo "$failures" | sed 's/^/  /'
  exit 1
fi
