#!/usr/bin/env bash
# Peak RSS and seconds per LoRA (rank 8) update — forward + backward of one micro-batch and an
# AdamW step — of randomly initialised models with the shapes of SmolLM2-135M and
# Qwen2.5-0.5B, against micro-batch size and sequence length (the second half of each sequence
# is scored). One process per configuration, so each peak is its own. Nothing is downloaded.
#
# Usage: bench/memory.sh [SHAPES] [BATCHES] [SEQS] [MODE]
#   SHAPES   default "smollm2-135m qwen2.5-0.5b"
#   BATCHES  default "1 4 8"
#   SEQS     default "256 512 1024"
#   MODE     recompute (default) or keep (no activation recomputation)
# STEPS=N times the last of N updates (default 1; peak RSS covers all of them).
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPES=${1:-"smollm2-135m qwen2.5-0.5b"}
BATCHES=${2:-"1 4 8"}
SEQS=${3:-"256 512 1024"}
MODE=${4:-recompute}
cargo build --release -q -p gigpo-model --example train_memory >&2
BIN=${CARGO_TARGET_DIR:-target}/release/examples/train_memory
echo "| model | micro-batch | seq len | mode | peak RSS training (MiB) | s / update | peak RSS building the random model (MiB) |"
echo "|---|---|---|---|---|---|---|"
for shape in $SHAPES; do
  for b in $BATCHES; do
    for t in $SEQS; do
      read -r s bb tt m build rss secs < <(STEPS=${STEPS:-1} "$BIN" "$shape" "$b" "$t" "$MODE")
      echo "| $s | $bb | $tt | $m | $rss | $secs | $build |"
    done
  done
done
