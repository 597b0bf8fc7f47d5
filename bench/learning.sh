#!/usr/bin/env bash
# GiGPO vs GRPO vs RLOO on the credit-assignment setting (configs/credit-assignment.toml;
# docs/training.md, "Comparing estimators"): the same seeds, training levels (a function of the
# seed), held-out levels, warm start where the setting has one, and environment-step budget for
# every estimator. Prints a table of held-out greedy and sampled success and return at the start
# and at the end of the budget (mean ± std over seeds) beside the random policy and the solver,
# each seed's success at the end and GiGPO − GRPO with a 95 % interval over seeds; writes it to
# OUT/table.md, the figures to OUT/summary.json and every curve to OUT/curves.png. Finished runs
# in OUT are kept and interrupted ones resumed, so an interrupted benchmark continues where it
# stopped, and two seed lists can run into one OUT side by side.
#
# Usage: bench/learning.sh OUT "SEEDS" [ENV_STEP_BUDGET] [extra `gigpo train` args...]
#   e.g. bench/learning.sh runs/bench-learning "1 2 3"
#   ENV_STEP_BUDGET  default 30000 training environment steps per run
# Needs: cargo, python3 (standard library only). GIGPO=/path/to/gigpo uses that binary instead
# of building the release one; CONFIG=FILE another setting.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_BUDGET=30000
source bench/lib/compare.sh
compare_setup "$@"
ESTIMATORS=(gigpo grpo rloo)
for seed in $SEEDS; do
  for est in "${ESTIMATORS[@]}"; do
    compare_run "$est" "$seed" --advantage_estimator "$est"
  done
done
compare_finish "${ESTIMATORS[@]}"
