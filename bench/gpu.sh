#!/usr/bin/env bash
# gigpo on a GPU, offline: checks the CUDA build against the CPU, then times one LoRA training
# iteration of randomly initialised models with the shapes of Qwen2.5-0.5B and Qwen2.5-1.5B
# (bench/gpu/*.json, configurations only: nothing is downloaded).
#
#  1. The binary: the one given, or one built by scripts/build-cuda.sh with the CUDA toolkit
#     found here (GIGPO_CUDA_HOME, CUDA_HOME, nvcc on PATH, /usr/local/cuda; else the one
#     scripts/build-cuda.sh installed in the cache before), for this GPU's compute capability.
#  2. scripts/check-cuda-binary.sh: the tiny model scores on the GPU as on the CPU.
#  3. `gigpo model parity`: logits of the tiny model, the Qwen2 and Llama test models (and the
#     SmolLM2-135M GGUF file when scripts/test.sh fetched it) on the GPU within 1e-3 of the CPU.
#  4. `gigpo model bench` per shape: BATCH sequences of PROMPT_TOKENS prompt tokens and
#     NEW_TOKENS sampled ones (temperature 1), then one update (forward, backward with
#     recomputed activations, AdamW on a rank-8 LoRA adapter of every projection) on them.
#     Peak GPU memory is the process's, polled with nvidia-smi every 0.1 s.
#
# Usage: bench/gpu.sh [PATH_TO_CUDA_GIGPO]
# Environment: BATCH (default 8), PROMPT_TOKENS (256), NEW_TOKENS (128),
#   SHAPES ("qwen2.5-0.5b qwen2.5-1.5b"), GIGPO_CACHE (~/.cache/gigpo).
# The CUDA libraries the binary loads (libcublas.so.13, libcublasLt.so.13, libcurand.so.10)
# are looked for in the toolkit, in Python's nvidia packages and in LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${GIGPO_CACHE:-$HOME/.cache/gigpo}"
BATCH=${BATCH:-8}
PROMPT_TOKENS=${PROMPT_TOKENS:-256}
NEW_TOKENS=${NEW_TOKENS:-128}
SHAPES=${SHAPES:-"qwen2.5-0.5b qwen2.5-1.5b"}

if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "bench/gpu.sh: nvidia-smi lists no GPU here" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1 \
    | sed 's/^/GPU: /'

toolkit() {
    local nvcc
    for dir in "${GIGPO_CUDA_HOME:-}" "${CUDA_HOME:-}"; do
        if [ -n "$dir" ] && [ -x "$dir/bin/nvcc" ]; then
            echo "$dir"
            return
        fi
    done
    if nvcc=$(command -v nvcc); then
        dirname "$(dirname "$(readlink -f "$nvcc")")"
        return
    fi
    for dir in /usr/local/cuda "$CACHE/cuda-13.0/nvidia/cu13"; do
        if [ -x "$dir/bin/nvcc" ]; then
            echo "$dir"
            return
        fi
    done
}

BIN=${1:-}
if [ -z "$BIN" ]; then
    home=$(toolkit)
    if [ -z "$home" ]; then
        echo "bench/gpu.sh: no nvcc here; give the path of a CUDA build of gigpo" \
            "(scripts/build-cuda.sh on any machine)" >&2
        exit 1
    fi
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)
    if [ "$home" = "$CACHE/cuda-13.0/nvidia/cu13" ]; then
        home=""
    fi
    BIN=$(GIGPO_CUDA_HOME="$home" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$cap}" \
        bash scripts/build-cuda.sh | tail -n 1)
    CUDA_HOME_USED=${home:-$CACHE/cuda-13.0/nvidia/cu13}
else
    CUDA_HOME_USED=$(toolkit)
fi
if [ ! -x "$BIN" ]; then
    echo "bench/gpu.sh: $BIN is not an executable" >&2
    exit 1
fi

# Directories that hold the CUDA libraries the binary loads.
libdirs=()
for dir in "${CUDA_HOME_USED:+$CUDA_HOME_USED/lib64}" "${CUDA_HOME_USED:+$CUDA_HOME_USED/lib}" \
    /usr/local/cuda/lib64 "$CACHE"/cuda-13.0/nvidia/cu13/lib \
    $(python3 -c 'import nvidia, os; [print(os.path.join(p, "cu13", "lib")) for p in nvidia.__path__]' 2>/dev/null || true) \
    "$CACHE"/venv-torch/lib/python3*/site-packages/nvidia/cu13/lib; do
    if [ -n "$dir" ] && { compgen -G "$dir/libcublas.so.*" || compgen -G "$dir/libcurand.so.*"; } \
        >/dev/null; then
        libdirs+=("$dir")
    fi
done
if [ ${#libdirs[@]} -gt 0 ]; then
    LD_LIBRARY_PATH="$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
fi
echo "binary: $BIN"

echo "== the tiny model on the GPU and on the CPU"
bash scripts/check-cuda-binary.sh "$BIN"

echo "== logits on the GPU against the CPU (tolerance 1e-3)"
models=(tiny crates/gigpo-model/tests/fixtures/qwen2 crates/gigpo-model/tests/fixtures/llama)
if [ -f "$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    models+=("$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf")
fi
for m in "${models[@]}"; do
    "$BIN" model parity --model "$m" --device cuda --tolerance 1e-3 | tail -n 1
done

# The GPU that CUDA calls device 0, as nvidia-smi numbers it.
export CUDA_DEVICE_ORDER=PCI_BUS_ID
GPU_INDEX=${CUDA_VISIBLE_DEVICES:-0}
GPU_INDEX=${GPU_INDEX%%,*}

# Runs one bench of shape $1 and prints its table row. Meanwhile the GPU memory of the process
# is polled; where nvidia-smi cannot see the process (another PID namespace), the GPU's memory
# in use above what it was before is taken instead.
bench_row() {
    local shape=$1 out mem total base pid peak
    out=$(mktemp)
    mem=$(mktemp)
    total=$(mktemp)
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$GPU_INDEX")
    "$BIN" model bench --config "bench/gpu/$shape.json" --device cuda --batch "$BATCH" \
        --prompt-tokens "$PROMPT_TOKENS" --new-tokens "$NEW_TOKENS" --json >"$out" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
            2>/dev/null | awk -F', *' -v p="$pid" '$1 == p { print $2 }' >>"$mem"
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$GPU_INDEX" \
            >>"$total" 2>/dev/null
        sleep 0.1
    done
    wait "$pid"
    peak=$(sort -n "$mem" | tail -n 1)
    if [ -z "$peak" ] && [ -s "$total" ]; then
        peak=$(($(sort -n "$total" | tail -n 1) - base))
    fi
    python3 - "$out" "$shape" "$BATCH" "$PROMPT_TOKENS" "$NEW_TOKENS" "$peak" <<'PY'
import json, sys
out, shape, batch, prompt, new, peak = sys.argv[1:]
f = json.load(open(out))
print("| {} | {} × ({} + {}) | {:.0f} | {:.0f} | {} | {:.2f} |".format(
    shape, batch, prompt, new, f["rollout_tokens_per_second"],
    f["trained_tokens_per_second"], peak or "?", f["seconds_per_iteration"]))
PY
    rm -f "$out" "$mem" "$total"
}

echo "== one LoRA training iteration per shape"
echo "| model shape | sequences × (prompt + sampled) tokens | rollout tokens/s | trained tokens/s | peak GPU memory (MiB) | s / iteration |"
echo "|---|---|---|---|---|---|"
for shape in $SHAPES; do
    bench_row "$shape"
done
