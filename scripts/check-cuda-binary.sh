#!/usr/bin/env bash
# Checks how a CUDA build of gigpo (scripts/build-cuda.sh) meets this machine, on the tiny
# built-in model. Without a GPU (no `nvidia-smi -L` listing one): `--device cuda` ends with an
# error saying "no CUDA device", exit status 1 and no panic, and `--device auto` says so and
# scores on the CPU exactly as `--device cpu` does. With a GPU: `--device cuda` and `--device
# auto` score on it, within 1e-3 of the CPU.
#
# Usage: scripts/check-cuda-binary.sh PATH_TO_GIGPO
set -euo pipefail
BIN=${1:?usage: check-cuda-binary.sh PATH_TO_GIGPO}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Scores a fixed response with the tiny model on device $1: JSON on $work/$1.out, messages on
# $work/$1.err; returns the exit status.
score() {
    local rc=0
    "$BIN" model score --model tiny --prompt "Push the box left." --response " up down" \
        --json --device "$1" >"$work/$1.out" 2>"$work/$1.err" || rc=$?
    return $rc
}

fail() {
    echo "check-cuda-binary.sh: $*" >&2
    for f in "$work"/*; do
        echo "--- $(basename "$f")" >&2
        cat "$f" >&2
    done
    exit 1
}

# The largest difference between the log-probabilities of two score outputs.
max_diff() {
    python3 -c '
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["tokens"] == b["tokens"], "different tokens"
print(max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"])))
' "$1" "$2"
}

score cpu || fail "--device cpu failed"

if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    score cuda || fail "--device cuda failed on a machine with a GPU"
    score auto || fail "--device auto failed on a machine with a GPU"
    grep -q "using CUDA device 0" "$work/auto.err" || fail "--device auto did not say it uses the GPU"
    for d in cuda auto; do
        diff=$(max_diff "$work/cpu.out" "$work/$d.out")
        python3 -c "import sys; sys.exit(0 if $diff < 1e-3 else 1)" \
            || fail "--device $d log-probabilities differ from the CPU's by $diff"
    done
    echo "CUDA binary on a GPU: --device cuda and auto score within 1e-3 of the CPU"
    exit 0
fi

rc=0
score cuda || rc=$?
[ "$rc" = 1 ] || fail "--device cuda without a GPU: exit status $rc, expected 1"
grep -q "^error: no CUDA device" "$work/cuda.err" \
    || fail "--device cuda without a GPU: no \"no CUDA device\" error"
if grep -qi "panick" "$work/cuda.err"; then
    fail "--device cuda without a GPU panicked"
fi
[ ! -s "$work/cuda.out" ] || fail "--device cuda without a GPU printed a result"

score auto || fail "--device auto without a GPU failed"
grep -q "no CUDA device.*using the CPU" "$work/auto.err" \
    || fail "--device auto did not say it falls back to the CPU"
cmp -s "$work/cpu.out" "$work/auto.out" || fail "--device auto scored differently from the CPU"
echo "CUDA binary without a GPU: --device cuda: \"$(head -n 1 "$work/cuda.err")\" (exit 1);" \
    "--device auto: \"$(head -n 1 "$work/auto.err")\""
