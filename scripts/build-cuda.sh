#!/usr/bin/env bash
# Builds gigpo with CUDA (`cargo build --release --features cuda` of gigpo-cli) on any Linux
# x86-64 machine, with or without a GPU, then checks that the binary starts: on a machine
# without a GPU `--device cuda` must end with "no CUDA device" and exit 1, and `--device auto`
# must fall back to the CPU; on a machine with one, the tiny model must run on it. The path of
# the binary is the last line printed.
#
# The CUDA compiler and headers come from PyPI (scripts/cuda-requirements.txt) into
# ${GIGPO_CACHE:-~/.cache/gigpo}/cuda-13.0, reused while that list is unchanged; with
# GIGPO_CUDA_HOME=/usr/local/cuda (or any toolkit with bin/nvcc) that toolkit is used and nothing
# is installed. The build has its own target directory in the cache (the CPU build's target/ is
# left alone), one per compute capability.
#
# candle asks cudarc to link the CUDA libraries, which would stop the binary from starting where
# there is no driver; the build uses candle-core with cudarc loading them at run time instead:
# the crates of Cargo.lock are vendored into the cache (checksums unchanged) and candle-core's
# manifest there says `dynamic-loading` where it says `dynamic-linking`. The CUDA runtime is
# linked statically. What the binary loads when it opens a GPU: libcuda.so.1 (the driver),
# libcublas.so.13, libcublasLt.so.13, libcurand.so.10 (found through LD_LIBRARY_PATH).
#
# Options:
#   --clippy   also run clippy with warnings as errors on the CUDA build of every crate
# Environment:
#   CUDA_COMPUTE_CAP   GPU architecture of the kernels (default 80: PTX for sm_80, which the
#                      driver compiles for any newer GPU; 90 for H100/H200-only kernels)
#   GIGPO_CUDA_HOME    use this CUDA toolkit instead of installing one
#   GIGPO_CACHE        cache directory (default ~/.cache/gigpo)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

CLIPPY=0
for arg in "$@"; do
    case "$arg" in
        --clippy) CLIPPY=1 ;;
        *) echo "build-cuda.sh: unknown argument $arg (expected --clippy)" >&2; exit 2 ;;
    esac
done

CACHE="${GIGPO_CACHE:-$HOME/.cache/gigpo}"
CAP="${CUDA_COMPUTE_CAP:-80}"
mkdir -p "$CACHE"

# The toolkit: the one given, or the pinned wheels, installed once per version of the list.
install_toolkit() {
    local prefix="$CACHE/cuda-13.0"
    if ! cmp -s scripts/cuda-requirements.txt "$prefix/cuda-requirements.txt"; then
        echo "== installing the CUDA compiler into $prefix" >&2
        rm -rf "$prefix" "$prefix.part"
        python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps \
            --root-user-action=ignore \
            --target "$prefix.part" -r scripts/cuda-requirements.txt
        cp scripts/cuda-requirements.txt "$prefix.part/cuda-requirements.txt"
        mv "$prefix.part" "$prefix"
    fi
    CUDA_HOME="$prefix/nvidia/cu13"
}
if [ -n "${GIGPO_CUDA_HOME:-}" ]; then
    CUDA_HOME="$GIGPO_CUDA_HOME"
else
    install_toolkit
fi
if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    echo "build-cuda.sh: no nvcc in $CUDA_HOME/bin" >&2
    exit 1
fi
export CUDA_HOME CUDA_COMPUTE_CAP="$CAP" PATH="$CUDA_HOME/bin:$PATH"
"$CUDA_HOME/bin/nvcc" --version | tail -n 2 >&2

TARGET="$CACHE/target-cuda-sm$CAP"
mkdir -p "$TARGET"

# The CUDA runtime, statically: `-lcudart` finds this archive first.
STATIC="$TARGET/cudart-static"
mkdir -p "$STATIC"
cudart=""
for dir in "$CUDA_HOME/lib" "$CUDA_HOME/lib64" "$CUDA_HOME/targets/x86_64-linux/lib"; do
    if [ -f "$dir/libcudart_static.a" ]; then
        cudart="$dir/libcudart_static.a"
        break
    fi
done
if [ -z "$cudart" ]; then
    echo "build-cuda.sh: no libcudart_static.a under $CUDA_HOME" >&2
    exit 1
fi
ln -sfn "$cudart" "$STATIC/libcudart.a"

# The crates of Cargo.lock, vendored, with candle-core's cudarc loading the CUDA libraries at
# run time (scripts/cuda-vendor-patch.py); vendored again when Cargo.lock or the patch changes.
# The directory stays where it is, so that the kernels built from it are not built again.
vendor_crates() {
    local key
    key=$(cat Cargo.lock scripts/cuda-vendor-patch.py | sha256sum | cut -c1-16)
    VENDOR="$CACHE/vendor-cuda"
    if [ "$(cat "$VENDOR/.key" 2>/dev/null)" = "$key" ]; then
        return
    fi
    echo "== vendoring the crates of Cargo.lock into $VENDOR" >&2
    rm -rf "$VENDOR"
    cargo vendor --locked --quiet --versioned-dirs "$VENDOR" >/dev/null
    python3 scripts/cuda-vendor-patch.py "$VENDOR"
    echo "$key" >"$VENDOR/.key"
}
vendor_crates

# cargo SUBCOMMAND with the vendored crates, the static runtime and the CUDA target directory.
cargo_cuda() {
    local sub=$1
    shift
    RUSTFLAGS="${RUSTFLAGS:-} -L native=$STATIC" cargo \
        --config "source.crates-io.replace-with='gigpo-cuda-vendor'" \
        --config "source.gigpo-cuda-vendor.directory='$VENDOR'" \
        "$sub" --locked --release --target-dir "$TARGET" "$@"
}

if [ "$CLIPPY" = 1 ]; then
    echo "== cargo clippy --features cuda (warnings are errors)" >&2
    cargo_cuda clippy --workspace --all-targets \
        --features gigpo-model/cuda,gigpo-cli/cuda -- -D warnings
fi
echo "== cargo build --release --features cuda" >&2
cargo_cuda build -p gigpo-cli --features cuda
BIN="$TARGET/release/gigpo"

# The binary links no CUDA library: it must start wherever the CPU build starts.
if readelf -d "$BIN" | grep -E 'NEEDED.*(libcuda|libcudart|libcublas|libcurand|libnvrtc)' >&2; then
    echo "build-cuda.sh: $BIN links CUDA libraries" >&2
    exit 1
fi
bash scripts/check-cuda-binary.sh "$BIN" >&2
echo "$BIN"
