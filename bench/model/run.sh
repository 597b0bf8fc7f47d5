#!/usr/bin/env bash
# Side-by-side benchmark of the model code: gigpo (candle) against PyTorch on the CPU, on the
# tiny model and on SmolLM2-135M-Instruct with a rank-8 LoRA.
#
# Usage: bench/model/run.sh [PYTHON]
#   PYTHON: an interpreter with torch, transformers and peft from PyPI (default: the test
#           script's venv, ${GIGPO_CACHE:-~/.cache/gigpo}/venv-torch/bin/python)
# Environment:
#   THREADS  (default 2) given to both sides (RAYON_NUM_THREADS / torch.set_num_threads)
#   ROUNDS   (default 3) rounds, each running gigpo's side and then PyTorch's
#   GIGPO_SMOLLM2_GGUF  the SmolLM2 GGUF file (scripts/test.sh fetches it into the cache); it is
#            converted once into runs/bench-model/smollm2. SMOLLM2=0 leaves SmolLM2 out.
# Prints a table: per benchmark the median seconds of each side over the rounds and the median
# of the paired ratios PyTorch time / gigpo time (> 1: gigpo faster), and the load average.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${GIGPO_CACHE:-$HOME/.cache/gigpo}
PY=${1:-$CACHE/venv-torch/bin/python}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
GGUF=${GIGPO_SMOLLM2_GGUF:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}
SMOLLM2_DIR=runs/bench-model/smollm2
cargo build --release -q -p gigpo-cli >&2
cargo bench -q -p gigpo-model --bench side_by_side --no-run 2>/dev/null
real=()
if [ "${SMOLLM2:-1}" != 0 ]; then
  if [ ! -f "$SMOLLM2_DIR/config.json" ]; then
    [ -f "$GGUF" ] || { echo "error: $GGUF not found (set GIGPO_SMOLLM2_GGUF, or SMOLLM2=0)" >&2; exit 1; }
    mkdir -p "$(dirname "$SMOLLM2_DIR")"
    "${CARGO_TARGET_DIR:-target}/release/gigpo" model convert --model "$GGUF" --out "$SMOLLM2_DIR" >&2
  fi
  real=("$PWD/$SMOLLM2_DIR")  # absolute: cargo bench runs in the crate's directory
fi
# Timings are only worth reading on an idle machine: the load average is printed before and after.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  # The gigpo binary's settings: mimalloc keeping freed memory, candle's element-wise operations
  # on the calling thread.
  ours=$(MIMALLOC_PURGE_DELAY=-1 CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS="$THREADS" \
    GIGPO_BENCH_SMOLLM2="${real[0]:-}" cargo bench -q -p gigpo-model --bench side_by_side | tail -n 1)
  theirs=$("$PY" -W ignore bench/model/torch_bench.py "$THREADS" "${real[@]}" | tail -n 1)
  echo "{\"ours\": $ours, \"theirs\": $theirs}" >> "$results"
done
echo "load average (1, 5, 15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$results" <<'PYEOF'
import json, statistics, sys
rounds = [json.loads(l) for l in open(sys.argv[1])]
# (label, our key, PyTorch's key): sampling is compared with transformers (forward with its cache,
# or `generate`) and with a plain decoder loop over the same weights (preallocated KV cache).
rows = [("tiny: training step (16 x 128, PPO loss, AdamW)", "train_step", "train_step"),
        ("tiny: sample 64, batch 1, vs transformers", "sample64_b1", "sample64_b1"),
        ("tiny: sample 64, batch 16, vs transformers", "sample64_b16", "sample64_b16"),
        ("tiny: sample 64, batch 1, vs plain loop", "sample64_b1", "plain_sample64_b1"),
        ("tiny: sample 64, batch 16, vs plain loop", "sample64_b16", "plain_sample64_b16"),
        ("SmolLM2: forward + backward (4 x 256, LoRA)", "smollm2.fwd_bwd", "smollm2.fwd_bwd"),
        ("SmolLM2: scoring, no gradient (4 x 256)", "smollm2.score", "smollm2.score"),
        ("SmolLM2: generate 64, batch 8, vs generate", "smollm2.generate64_b8", "smollm2.generate64_b8"),
        ("SmolLM2: generate 64, batch 8, vs plain loop", "smollm2.generate64_b8", "smollm2.plain_generate64_b8")]
first = rounds[0]
print(f"threads: ours {first['ours']['threads']}, PyTorch {first['theirs']['threads']} "
      f"(torch {first['theirs']['torch']}); medians of {len(rounds)} alternating rounds")
print(f"| {'benchmark':<46} | {'gigpo (s)':>10} | {'PyTorch (s)':>11} | {'gigpo speed vs PyTorch':>22} |")
print(f"|{'-'*48}|{'-'*12}|{'-'*13}|{'-'*24}|")
for label, ok, tk in rows:
    if ok not in first["ours"]:
        continue
    a = statistics.median(r["ours"][ok] for r in rounds)
    b = statistics.median(r["theirs"][tk] for r in rounds)
    ratio = statistics.median(r["theirs"][tk] / r["ours"][ok] for r in rounds)
    print(f"| {label:<46} | {a:>10.4f} | {b:>11.4f} | {ratio:>21.2f}x |")
PYEOF
