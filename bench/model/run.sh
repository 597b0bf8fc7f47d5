#!/usr/bin/env bash
# Side-by-side benchmark of the tiny model: our candle code vs PyTorch on the CPU.
#
# Usage: bench/model/run.sh [PYTHON]
#   PYTHON: an interpreter with torch and transformers from PyPI
#           (default: python3; e.g. python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers)
# Environment: THREADS (default 2) is given to both sides (RAYON_NUM_THREADS / torch.set_num_threads).
# Prints a table of median seconds and the speed ratio (PyTorch time / our time; > 1 means faster).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:-python3}"
THREADS="${THREADS:-2}"
# Timings are only worth reading on an idle machine: the load average is printed before and after.
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# The gigpo binary's allocator settings: mimalloc (the bench's global allocator) keeping freed memory.
ours=$(MIMALLOC_PURGE_DELAY=-1 RAYON_NUM_THREADS="$THREADS" cargo bench -q -p gigpo-model --bench side_by_side 2>/dev/null | tail -n 1)
theirs=$("$PY" bench/model/torch_bench.py "$THREADS" | tail -n 1)
echo "load average (1, 5, 15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$ours" "$theirs" <<'PYEOF'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
# (label, our key, PyTorch's key): sampling is compared with transformers' forward with a cache
# and with a plain decoder loop over the same weights (preallocated KV cache).
rows = [("training step (16 x 128, PPO loss, AdamW)", "train_step", "train_step"),
        ("sample 64 tokens, batch 1", "sample64_b1", "sample64_b1"),
        ("sample 64 tokens, batch 16", "sample64_b16", "sample64_b16"),
        ("sample 64, batch 1, vs plain PyTorch loop", "sample64_b1", "plain_sample64_b1"),
        ("sample 64, batch 16, vs plain PyTorch loop", "sample64_b16", "plain_sample64_b16")]
print(f"threads: ours {ours['threads']}, PyTorch {theirs['threads']} (torch {theirs['torch']})")
print(f"| {'benchmark':<42} | {'gigpo (s)':>10} | {'PyTorch (s)':>11} | {'speed vs PyTorch':>16} |")
print(f"|{'-'*44}|{'-'*12}|{'-'*13}|{'-'*18}|")
for label, ours_key, theirs_key in rows:
    a, b = ours[ours_key], theirs[theirs_key]
    print(f"| {label:<42} | {a:>10.4f} | {b:>11.4f} | {b / a:>15.2f}x |")
PYEOF
