# Shared by bench/learning.sh and bench/ablations.sh (sourced, not run): the arguments, one
# training run that resumes when interrupted, and the summary.
#
# After `compare_setup "$@"`: OUT, SEEDS, BUDGET, EXTRA (array), GIGPO, CONFIG.

CONFIG=${CONFIG:-configs/credit-assignment.toml}

compare_usage() {
  cat >&2 <<USAGE
Usage: $0 OUT "SEEDS" [ENV_STEP_BUDGET] [extra \`gigpo train\` args...]
  OUT              output directory (runs, table.md, summary.json, curves.png)
  SEEDS            seeds, e.g. "1 2 3"
  ENV_STEP_BUDGET  training environment steps per run (default $DEFAULT_BUDGET)
  extra args       passed to every run after --config $CONFIG, e.g. --set eval.levels=64
CONFIG=FILE changes the setting; GIGPO=/path/to/gigpo uses that binary instead of building the
release one.
USAGE
  exit 2
}

compare_setup() {
  [ $# -ge 2 ] || compare_usage
  OUT=$1
  SEEDS=$2
  BUDGET=${3:-$DEFAULT_BUDGET}
  shift $(( $# > 3 ? 3 : $# ))
  EXTRA=("$@")
  [ -n "$SEEDS" ] || compare_usage
  if [ -z "${GIGPO:-}" ]; then
    cargo build --release -p gigpo-cli >&2
    GIGPO=${CARGO_TARGET_DIR:-target}/release/gigpo
  fi
  mkdir -p "$OUT"
  # Finished runs are reused only with the same setting.
  local setting
  setting=$(printf '%s\n' "config=$CONFIG" "budget=$BUDGET" ${EXTRA[@]+"${EXTRA[@]}"})
  if [ -f "$OUT/setting.txt" ] && [ "$(cat "$OUT/setting.txt")" != "$setting" ]; then
    echo "$OUT holds runs of another setting ($OUT/setting.txt); choose another OUT" >&2
    exit 1
  fi
  printf '%s\n' "$setting" > "$OUT/setting.txt"
}

# compare_run NAME SEED [gigpo train args...]: trains OUT/NAME-seedSEED unless it finished;
# an interrupted run is resumed from its newest checkpoint.
compare_run() {
  local name=$1 seed=$2
  shift 2
  local dir="$OUT/$name-seed$seed"
  if [ -f "$dir/finished" ]; then
    echo "keeping finished run $dir" >&2
    return
  fi
  if [ -f "$dir/config.toml" ]; then
    echo "resuming $dir" >&2
    "$GIGPO" train --quiet --resume "$dir" 2>> "$dir.log" || { cat "$dir.log" >&2; exit 1; }
  else
    rm -rf "$dir"
    echo "training $dir: $*" >&2
    "$GIGPO" train --quiet --config "$CONFIG" --run-dir "$dir" --seed "$seed" \
      --iterations 1000 --set env_step_budget="$BUDGET" "$@" ${EXTRA[@]+"${EXTRA[@]}"} \
      2> "$dir.log" || { cat "$dir.log" >&2; exit 1; }
  fi
  touch "$dir/finished"
}

# compare_finish NAME...: one PNG of every curve, the table (also OUT/table.md) and
# OUT/summary.json.
compare_finish() {
  local dirs=() name seed
  for name in "$@"; do
    for seed in $SEEDS; do dirs+=("$OUT/$name-seed$seed"); done
  done
  "$GIGPO" plot "${dirs[@]}" --out "$OUT/curves.png" >&2
  python3 bench/lib/summarize.py "$OUT" "$SEEDS" "$@" | tee "$OUT/table.md"
}
