#!/usr/bin/env bash
# What the default run learns and where it comes from: the default `gigpo train` (warm start on
# solver demonstrations, then GiGPO), the warm start alone given the default run's whole time,
# and GiGPO alone (no warm start) given the same time, all on the same 256 held-out levels with
# the random and optimal baselines. Prints one table (final held-out success, greedy and
# sampled, with 95 % intervals, and the wall time of each run) and draws the curves into one PNG.
# Finished runs in OUT_DIR are kept, so an interrupted benchmark resumes.
#
# Usage: bench/warm-start.sh [OUT_DIR] [SEED]
#   OUT_DIR  default runs/bench-warm-start
#   SEED     default 0
# The equal-time settings are estimates from throughput (a warm-start step, a GiGPO iteration)
# on a 2-core machine; the table prints each run's wall time, so check them there and change
# them with SFT_ONLY_LEVELS and RL_ONLY_ITERATIONS.
# Needs: cargo, python3 (standard library only). GIGPO=/path/to/gigpo uses that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench-warm-start}
SEED=${2:-0}
SFT_ONLY_LEVELS=${SFT_ONLY_LEVELS:-46000}
RL_ONLY_ITERATIONS=${RL_ONLY_ITERATIONS:-190}
if [ -z "${GIGPO:-}" ]; then
  cargo build --release -p gigpo-cli >&2
  GIGPO=${CARGO_TARGET_DIR:-target}/release/gigpo
fi
mkdir -p "$OUT"
run() {
  local name=$1; shift
  local dir="$OUT/$name"
  if [ -f "$dir/wall_s" ]; then echo "keeping finished run $dir" >&2; return; fi
  rm -rf "$dir"
  echo "training $dir: gigpo train $*" >&2
  local start=$(date +%s.%N)
  "$GIGPO" train --quiet --run-dir "$dir" --seed "$SEED" "$@" 2> "$OUT/$name.log" \
    || { cat "$OUT/$name.log" >&2; exit 1; }
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" \
    "$start" "$(date +%s.%N)" > "$dir/wall_s"
}
run default
run sft-only --iterations 0 --set sft.levels="$SFT_ONLY_LEVELS"
run rl-only --set sft.levels=0 --iterations "$RL_ONLY_ITERATIONS"
"$GIGPO" plot "$OUT/default" "$OUT/sft-only" "$OUT/rl-only" --out "$OUT/curves.png" >&2
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def evals(name):
    rows = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl") if l.strip()]
    return [r for r in rows if "eval/success_rate" in r]
def rate(r, key):
    return f"{r[key]:.3f} [{r[key + '_ci_low']:.3f}, {r[key + '_ci_high']:.3f}]"
print("| run | iterations | greedy success (T = 0) | sampled success (T = 1) | wall time |")
print("|---|---|---|---|---|")
for name in ["default", "sft-only", "rl-only"]:
    ev = evals(name)
    wall = open(f"{out}/{name}/wall_s").read().strip()
    for label, r in ([("after the warm start", ev[0])] if name == "default" else []) + [("end", ev[-1])]:
        it = int(r["iteration"])
        print(f"| {name} ({label}) | {it} | {rate(r, 'eval/greedy_success_rate')} | "
              f"{rate(r, 'eval/success_rate')} | {wall + ' s' if label == 'end' else ''} |")
last = evals("default")[-1]
print(f"| random policy ({last.get('eval/levels', 256):.0f} levels) | | | "
      f"{last['eval/random_success_rate']:.3f} | |")
print(f"| optimal solver within the step limit | | | {last['eval/optimal_success_rate']:.3f} | |")
print(f"\ncurves: {out}/curves.png")
PY
