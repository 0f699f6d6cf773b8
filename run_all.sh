#!/usr/bin/env bash
# Run every question of the study, then write the report results/README.md and results/manifest.json.
#
#   bash run_all.sh                                   # embedded data, full protocol, each question's seeds
#   bash run_all.sh --mlp-data PATH/TO/COURSE_CSVS --cnn-data /data/whichfaceisreal
#   bash run_all.sh --force                           # retrain even what is cached
#   PYTHON=/path/to/venv/bin/python bash run_all.sh   # a Python other than the `python` on PATH
#
# The questions come from the scripts, in the lanes `mlp.py --lanes N` and `cnn.py --lanes N` print: one
# process a lane, all side by side, then the questions that read several lanes (Section 7's summary and
# mistakes). A question that fails does not stop the others;
# the failures are listed at the end and the exit code is 1. Cached questions (same settings, data and code) are
# reused, so a run that was interrupted picks up where it stopped.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bash run_all.sh [--mlp-data DIR] [--cnn-data DIR] [--cnn-weights W] [--out DIR] [--seeds N]
                       [--device D] [--image-size N] [--cache-dir DIR] [--jobs N] [--section 6|7|all]
                       [--force] [--quick]
  --mlp-data DIR    Section 6 CSV folder: train.csv, validation.csv, test.csv (default: the embedded data/europe)
  --cnn-data DIR    Section 7 ImageFolder (default: the generated real-vs-fake demo set)
  --cnn-weights W   pretrained ResNet18 for Section 7: imagenet, none or a state-dict file (default imagenet)
  --out DIR         results folder (default: results next to this script; with --quick, results-quick, and a
                    folder holding full results is refused)
  --seeds N         seeds per setting, for every Section 6 question (default: each question's own, 3; the
                    sweep's 5)
  --device D        auto, cpu or cuda (default auto)
  --image-size N    Section 7 image size (default: 224 on real data, 96 on the demo set; see README)
  --cache-dir DIR   Section 7's demo images and decoded-tensor cache (default: cache/ next to this script)
  --jobs N          Sections 6 and 7 each run in N parallel lanes, balanced by each question's last CPU time,
                    all side by side; each process gets its share of the cores (default 2 lanes; 1 on a GPU)
  --section S       run only Section 6 (mlp.py) or 7 (cnn.py); the report covers what exists (default all)
  --force           retrain every question even if a saved result matches
  --quick           the scripts' tiny test budget: a check that everything runs, its numbers mean nothing
Environment: PYTHON, the interpreter that runs the scripts (default: python).
EOF
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
# glibc's malloc gives freed blocks over 128 KB back to the system, and the next training step faults them
# back in (measured: `mlp.py --question lr` spent 1.6 s in the kernel, 0.3 s with these). Blocks up to 32 MB
# stay in the process instead: speed only, the numbers do not change. A value already in the environment wins.
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-33554432}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-1073741824}"
out=""
mlp_data="" cnn_data="" cnn_weights=imagenet cache_dir="$here/cache" image_size="" seeds="" device=auto jobs=2
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
case "$jobs" in ''|*[!0-9]*|0) echo "run_all.sh: --jobs must be a positive whole number" >&2; exit 2 ;; esac
case "$section" in 6|7|all) ;; *) echo "run_all.sh: --section must be 6, 7 or all" >&2; exit 2 ;; esac
if [ ${#quick[@]} -eq 0 ]; then
  [ -n "$out" ] || out="$here/results"
else  # a quick run never writes over the study's results (the scripts refuse it too, but later)
  [ -n "$out" ] || out="$here/results-quick"
  (cd "$here" && "$python" -c 'import sys, runner
try:
    runner.refuse_quick_over_full(sys.argv[1])
except runner.UserError as e:
    sys.exit(f"run_all.sh: {e}")' "$out") || exit 2
fi

[ -f "$cnn_weights" ] && cnn_weights="$(cd "$(dirname "$cnn_weights")" && pwd)/$(basename "$cnn_weights")"
# ${a[@]+"${a[@]}"}: an empty array under set -u, in every bash
mlp_args=(--out "$out" --device "$device" --quiet ${force[@]+"${force[@]}"} ${quick[@]+"${quick[@]}"})
[ -n "$seeds" ] && mlp_args+=(--seeds "$seeds")
[ -n "$mlp_data" ] && mlp_args+=(--data-dir "$mlp_data")
cnn_args=(--out "$out" --device "$device" --cache-dir "$cache_dir" --quiet
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

# reads_weights QUESTION...: does one of these cnn.py questions read --weights? cnn.py refuses a flag that
# none of its questions reads, so a lane of XGBoost and the ResNet from scratch runs without it.
reads_weights() {
  local question
  for question in "$@"; do grep -qx "$question" "$logs/weights_readers.txt" && return 0; done
  return 1
}

# run SCRIPT LOG QUESTION...: run the questions in one process (each appends its wall time and status to
# $times), log to LOG, and say how it went.
run() {
  local script="$1" log="$logs/$2.log" start
  shift 2
  local args=("${mlp_args[@]}")
  [ "$script" = cnn.py ] && args=("${cnn_args[@]}")
  if [ "$script" = cnn.py ] && reads_weights "$@"; then args+=(--weights "$cnn_weights"); fi
  start=$(date +%s.%N)
  if "$python" "$script" --question "$@" "${args[@]}" --times "$times" > "$log" 2>&1; then
    printf '%-8s %7s s  ok      %s\n' "${script%.py}" "$(elapsed "$start" "$(date +%s.%N)")" "$*"
  else
    printf '%-8s %7s s  FAILED  %s (log: %s)\n' "${script%.py}" "$(elapsed "$start" "$(date +%s.%N)")" "$*" "$log"
    sed 's/^/    | /' "$log" | tail -n 5
    return 1
  fi
}

echo "logs in $logs"
if [ "$device" != cpu ] && [ "$jobs" -gt 1 ] &&
   "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  jobs=1  # one GPU: lanes would queue on it, each holding a copy of the data and its own CUDA context
  echo "on the GPU: one lane a section"
fi
# lanes.txt: one line per process, the script then its questions, from the scripts' --lanes: a question shares
# the lane of the one it reads, and the lanes are balanced by each question's last CPU time; a line "SCRIPT
# after QUESTION..." runs once every lane of that script is done. The two scripts plan side by side: each
# start-up takes seconds (torch's import).
plan() {
  "$python" "$1.py" --lanes "$jobs" --out "$out" | sed "s/^/$1 /" ||
    { echo "run_all.sh: $1.py --lanes $jobs failed, so no question ran" >&2; return 1; }
}
plans=()
: > "$logs/lanes_mlp.txt"
: > "$logs/lanes_cnn.txt"
if [ "$section" != 7 ]; then plan mlp > "$logs/lanes_mlp.txt" & plans+=($!); fi
if [ "$section" != 6 ]; then
  plan cnn > "$logs/lanes_cnn.txt" & plans+=($!)
  "$python" -c 'import cnn, runner; print("\n".join(runner.readers(cnn.SCRIPT, "weights")))' \
    > "$logs/weights_readers.txt" & plans+=($!)
fi
for pid in ${plans[@]+"${plans[@]}"}; do wait "$pid"; done
cat "$logs/lanes_mlp.txt" "$logs/lanes_cnn.txt" > "$logs/lanes.txt"
# The lanes run side by side, one process each, and each process gets its share of the cores: a thread more
# than a core per process makes the processes wait on each other.
processes=$(grep -vc '^[a-z]* after ' "$logs/lanes.txt" || true)
threads=$(( $("$python" -c 'import os; print(os.cpu_count() or 1)') / processes ))
[ "$threads" -ge 1 ] || threads=1
mlp_args+=(--threads "$threads")
cnn_args+=(--threads "$threads")
echo "$processes process(es) side by side, $threads thread(s) each"
# Each section runs in the background: its lanes side by side, then its questions that read several lanes, as
# soon as its own lanes are done (Section 7's summary runs while Section 6 still trains). A failure is a line
# in failures.txt.
: > "$logs/failures.txt"
run_section() {
  local script="$1" pids=() logs_of=() i n=0 name questions
  while read -r name questions; do
    n=$((n + 1))
    [ "$name" = "$script" ] || continue
    case "$questions" in after\ *) continue ;; esac
    # shellcheck disable=SC2086  # one word per question
    run "$script.py" "${script}_lane$n" $questions &
    pids+=($!)
    logs_of+=("logs/${script}_lane$n.log")
  done < "$logs/lanes.txt"
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || echo "see ${logs_of[$i]}" >> "$logs/failures.txt"; done
  questions=$(sed -n "s/^$script after //p" "$logs/lanes.txt")
  # shellcheck disable=SC2086
  [ -z "$questions" ] || run "$script.py" "${script}_after" $questions ||
    echo "see logs/${script}_after.log" >> "$logs/failures.txt"
}
sections=()
for script in mlp cnn; do
  if grep -q "^$script " "$logs/lanes.txt"; then run_section "$script" & sections+=($!); fi
done
for pid in ${sections[@]+"${sections[@]}"}; do wait "$pid"; done
mapfile -t failures < "$logs/failures.txt"

total=$(elapsed "$start_all" "$(date +%s.%N)")
"$python" study.py --out "$out" --times "$times" --lanes "$logs/lanes.txt" --total "$total" \
  --image-size "${image_size:-224}"
echo "total $total s; report: $out/README.md"

if [ ${#failures[@]} -gt 0 ] || grep -q $'\tfailed$' "$times"; then
  echo "failed (logs in $logs):"
  awk -F'\t' '$3 != "ok" {print "  " $1}' "$times"
  printf '  %s\n' ${failures[@]+"${failures[@]}"}
  exit 1
fi
