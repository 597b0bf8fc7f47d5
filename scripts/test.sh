#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: sets up the Python packages that the
# remote-environment tests talk to (in .venv, pinned), then runs the Rust test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f python/requirements-test.txt ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r python/requirements-test.txt
    export GIGPO_PYTHON="$PWD/.venv/bin/python"
fi

# Property tests draw their cases from a fixed seed, so every run tests the same cases.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261122}"

cargo test --workspace --locked "$@"
