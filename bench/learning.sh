#!/usr/bin/env bash
# GiGPO vs GRPO vs RLOO on built-in Sokoban with the same environment-step budget, the same
# training levels (the level sequence is a function of the seed) and the same held-out levels.
# Prints a table of the final held-out success rate and return (mean ± std over seeds) and draws
# all curves into one PNG. Finished runs in OUT_DIR are kept, so an interrupted benchmark resumes.
#
# Usage: bench/learning.sh [OUT_DIR] [SEEDS] [ENV_STEP_BUDGET] [extra `gigpo train` args...]
#   OUT_DIR          default runs/bench-learning
#   SEEDS            default "1 2 3"
#   ENV_STEP_BUDGET  default 12000 training environment steps per run
# Needs: cargo, python3 (standard library only). GIGPO=/path/to/gigpo uses that binary instead
# of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench-learning}
SEEDS=${2:-"1 2 3"}
BUDGET=${3:-12000}
shift $(( $# > 3 ? 3 : $# ))
if [ -z "${GIGPO:-}" ]; then
  cargo build --release -p gigpo-cli >&2
  GIGPO=${CARGO_TARGET_DIR:-target}/release/gigpo
fi
mkdir -p "$OUT"
for est in gigpo grpo rloo; do
  for seed in $SEEDS; do
    dir="$OUT/$est-seed$seed"
    if [ -d "$dir/checkpoints" ]; then echo "keeping finished run $dir" >&2; continue; fi
    echo "training $dir" >&2
    "$GIGPO" train --quiet --run-dir "$dir" --seed "$seed" --advantage_estimator "$est" \
      --iterations 1000 --set env_step_budget="$BUDGET" "$@" 2> "$dir.log" || { cat "$dir.log" >&2; exit 1; }
  done
done
"$GIGPO" plot "$OUT"/*-seed*/ --out "$OUT/curves.png" >&2
python3 - "$OUT" "$SEEDS" <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2].split()
def last(path, key):
    vals = [json.loads(l) for l in open(path) if l.strip()]
    vals = [r for r in vals if key in r]
    return vals[-1][key], vals[0][key]
print(f"| estimator | held-out success (start) | held-out success (end) | held-out return (end) | env steps |")
print(f"|---|---|---|---|---|")
for est in ["gigpo", "grpo", "rloo"]:
    s_end, s_start, r_end, steps = [], [], [], []
    for seed in seeds:
        m = f"{out}/{est}-seed{seed}/metrics.jsonl"
        e, b = last(m, "eval/success_rate")
        r, _ = last(m, "eval/mean_return")
        st, _ = last(m, "env_steps")
        s_end.append(e); s_start.append(b); r_end.append(r); steps.append(st)
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    print(f"| {est} | {statistics.mean(s_start):.3f} ± {sd(s_start):.3f} | {statistics.mean(s_end):.3f} ± {sd(s_end):.3f} "
          f"| {statistics.mean(r_end):.2f} ± {sd(r_end):.2f} | {statistics.mean(steps):.0f} |")
print(f"\ncurves: {out}/curves.png")
PY
