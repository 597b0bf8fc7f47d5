#!/usr/bin/env bash
# Throughput of a real model's training iteration: gigpo against transformers + PEFT on the same
# machine and the same work (configs/smollm2-frozenlake.toml: SmolLM2-135M-Instruct with a
# rank-8 LoRA, FrozenLake 3x3, answers prefilled with "<action>"; torch_iteration.py reads the
# shapes from the config).
# gigpo's side is ITERATIONS iterations of `gigpo train` with that config (no evaluation), read
# from its metrics.jsonl: the rollout of the first iteration (the prompted policy, which is what
# PyTorch samples: its optimizer runs at lr 0) and the median update; PyTorch's is
# bench/real-model/torch_iteration.py. Prints a Markdown table and the load average.
#
# Usage: bench/real-model/run.sh [PYTHON] [WORK_DIR]
#   PYTHON    an interpreter with torch, transformers and peft (default: the test script's
#             venv, ${GIGPO_CACHE:-~/.cache/gigpo}/venv-torch/bin/python)
#   WORK_DIR  default runs/bench-real-model
# Environment: THREADS (default 2; RAYON_NUM_THREADS / torch.set_num_threads), ITERATIONS
# (default 2), GIGPO_SMOLLM2_GGUF (the GGUF file; scripts/test.sh fetches it into the cache).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${GIGPO_CACHE:-$HOME/.cache/gigpo}
PY=${1:-$CACHE/venv-torch/bin/python}
WORK=${2:-runs/bench-real-model}
THREADS=${THREADS:-2}
ITERATIONS=${ITERATIONS:-2}
GGUF=${GIGPO_SMOLLM2_GGUF:-$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf}
cargo build --release -q -p gigpo-cli >&2
G=${CARGO_TARGET_DIR:-target}/release/gigpo
mkdir -p "$WORK"
[ -d "$WORK/smollm2" ] || "$G" model convert --model "$GGUF" --out "$WORK/smollm2" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
RAYON_NUM_THREADS=$THREADS "$G" train --quiet --force --config configs/smollm2-frozenlake.toml \
  --model "$WORK/smollm2" --run-dir "$WORK/gigpo" --iterations "$ITERATIONS" \
  --set eval.every=0 >&2
theirs=$("$PY" bench/real-model/torch_iteration.py "$WORK/smollm2" "$THREADS" | tail -n 1)
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/gigpo/metrics.jsonl" "$theirs" "$THREADS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if "perf/update_tokens_per_s" in r]
theirs = json.loads(sys.argv[2])
ours = lambda k: rows[0][k] if k.startswith("perf/rollout") else statistics.median(r[k] for r in rows)
table = [("rollout: prompt tokens / s", "perf/rollout_prompt_tokens_per_s", "rollout_prompt_tokens_per_s"),
         ("rollout: generated tokens / s", "perf/rollout_tokens_per_s", "rollout_generated_tokens_per_s"),
         ("update: trained sequence tokens / s", "perf/update_tokens_per_s", "update_tokens_per_s")]
print(f"threads {sys.argv[3]}; torch {theirs['torch']}; gigpo: rollout of iteration 1, median update of {len(rows)}")
print("| work | gigpo | transformers + PEFT | gigpo / PyTorch |")
print("|---|---|---|---|")
for label, ok, tk in table:
    print(f"| {label} | {ours(ok):.1f} | {theirs[tk]:.1f} | {ours(ok) / theirs[tk]:.2f}x |")
PY
