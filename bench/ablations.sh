#!/usr/bin/env bash
# The GiGPO ablations of docs/advantages.md ("Ablations") on the credit-assignment setting
# (configs/credit-assignment.toml), each with the same levels, seeds and environment-step
# budget: both levels with ω = 1 (GiGPO as shipped), the episode level alone (= GRPO), the step
# level alone, ω = 0.5 and ω = 2, and norm = fixed (mean-centering only). Same output as
# bench/learning.sh: the table (OUT/table.md), OUT/summary.json and OUT/curves.png; finished
# runs are kept and interrupted ones resumed.
#
# Usage: bench/ablations.sh OUT "SEEDS" [ENV_STEP_BUDGET] [extra `gigpo train` args...]
#   e.g. bench/ablations.sh runs/bench-ablations "1 2 3"
#   ENV_STEP_BUDGET  default 30000 training environment steps per run
# Needs: cargo, python3 (standard library only). GIGPO=/path/to/gigpo uses that binary instead
# of building the release one; CONFIG=FILE another setting.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_BUDGET=30000
source bench/lib/compare.sh
compare_setup "$@"
# name and the settings that make it (on top of the configuration's GiGPO defaults).
ABLATIONS=(
  "both    algorithm.levels=both"
  "episode algorithm.levels=episode"
  "step    algorithm.levels=step"
  "w0.5    algorithm.step_advantage_weight=0.5"
  "w2      algorithm.step_advantage_weight=2.0"
  "fixed   algorithm.norm=fixed"
)
names=()
for ablation in "${ABLATIONS[@]}"; do
  read -r name _ <<< "$ablation"
  names+=("$name")
done
for seed in $SEEDS; do
  for ablation in "${ABLATIONS[@]}"; do
    read -r name setting <<< "$ablation"
    compare_run "$name" "$seed" --advantage_estimator gigpo --set "$setting"
  done
done
compare_finish "${names[@]}"
