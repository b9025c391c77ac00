#!/usr/bin/env bash
# Create (idempotently) the folder holding llama.cpp's OpenAI-compatible server (llama-server) and the Python
# package that writes the tiny GGUF model the interop tests give it.  llama.cpp is a PEER used only by tests: it is
# never a dependency of fastchat-gateway, and none of its code is imported by the gateway or copied here.
#
# Where llama-server comes from: no registry serves a llama-server binary for Linux x86-64 (Debian bookworm has
# no llama.cpp package; llama-cpp-python's PyPI release is an sdist; npm's node-llama-cpp ships a Node addon, not the
# server), so it is compiled from the llama.cpp source that llama-cpp-python's sdist vendors (pinned by version and
# sha256 below): only the llama-server target, CPU only, static, no web UI, no OpenSSL, no download of anything.
#
# Usage:
#   bash harness/llamacpp_venv.sh DIR
#
# Exit codes:
#   0  ready (or already up to date: stamp matched)
#   2  usage error / DIR is not a venv we may (re)create
#   3  prerequisite missing: a package could not be installed, or llama-server did not build
#   *  anything else: the final check failed (message on stderr)
#
# Environment:
#   LLAMACPP_VENV_PYTHON  base interpreter for `-m venv` (default: python3)
#   LLAMACPP_BUILD_JOBS   parallel compile jobs (default: nproc)
#   PIP_CACHE_DIR etc.    honoured by pip as usual.
#
# The stamp file DIR/.llamacpp-venv-stamp holds a hash of this script (and harness/peer_venv.sh), of harness/llamacpp_constraints.txt and of
# the base interpreter; when it matches, the script exits 0 at once.  Changing a pin rebuilds from scratch.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1

PYTHON=${LLAMACPP_VENV_PYTHON:-python3}
SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
CONSTRAINTS="$(dirname "$SCRIPT_PATH")/llamacpp_constraints.txt"
mkdir -p "$(dirname "$DIR")"
DIR=$(readlink -m "$DIR")
STAMP="$DIR/.llamacpp-venv-stamp"
JOBS=${LLAMACPP_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}

# --- pins -------------------------------------------------------------------
# llama-cpp-python 0.3.36 (checked on 2026-12-04, the newest on the registry) vendors llama.cpp at commit
# 0c1e57098 (its CHANGELOG), with ggml 0.25.3 and gguf-py 0.19.0; its sdist is 76 MB.  The sdist has no git
# history, so the commit is given to cmake for `llama-server --version`.  gguf (the writer of the tiny model) is the same 0.19.0 from PyPI; cmake and
# ninja come from PyPI too, so the build does not depend on the machine's own.  A C++17 compiler (g++) is needed.
LLAMA_CPP_PYTHON_VERSION=0.3.36
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CPP_COMMIT=0c1e57098
PY_PINS=("gguf==0.19.0" "cmake==3.31.10" "ninja==1.13.2")
CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF
    -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_CCACHE=OFF
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_COMMIT="$LLAMA_CPP_COMMIT"
)
# ---------------------------------------------------------------------------

NAME=llamacpp_venv
# shellcheck source=harness/peer_venv.sh
source "$(dirname "$SCRIPT_PATH")/peer_venv.sh"
peer_venv_start llama-server "llama-server"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 ||
    die 3 "prerequisite missing: no C++ compiler (c++ or g++; Debian: apt-get install g++)"
echo "$NAME: compiling with $JOBS jobs"

CARGS=()
if [[ -f "$CONSTRAINTS" ]]; then CARGS=(-c "$CONSTRAINTS"); fi
"${PIP[@]}" --only-binary :all: "${CARGS[@]}" "${PY_PINS[@]}" ||
    die 3 "prerequisite missing: 'pip install ${PY_PINS[*]}' failed (see pip's output above)"
elapsed "gguf, cmake, ninja installed"

SRC="$DIR/src"
rm -rf "$SRC"
mkdir -p "$SRC"
printf 'llama-cpp-python==%s --hash=sha256:%s\n' "$LLAMA_CPP_PYTHON_VERSION" "$LLAMA_CPP_PYTHON_SHA256" \
    >"$SRC/sdist-requirement.txt"
"$VPY" -m pip download --disable-pip-version-check --no-input --quiet --no-deps --no-binary :all: \
    --require-hashes -r "$SRC/sdist-requirement.txt" -d "$SRC" ||
    die 3 "prerequisite missing: 'pip download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION' (sdist) failed"
SDIST="$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
[[ -f "$SDIST" ]] || die 3 "prerequisite missing: $SDIST not downloaded"
echo "$LLAMA_CPP_PYTHON_SHA256  $SDIST" | sha256sum -c --quiet - || die 3 "prerequisite missing: $SDIST: sha256 differs"
tar -xzf "$SDIST" -C "$SRC" "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
LLAMA_SRC="$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
rm -f "$SDIST"
elapsed "llama.cpp source unpacked"

BUILD="$SRC/build"
PATH="$DIR/bin:$PATH" "$DIR/bin/cmake" -S "$LLAMA_SRC" -B "$BUILD" -G Ninja "${CMAKE_FLAGS[@]}" \
    >"$SRC/cmake-configure.log" 2>&1 ||
    { tail -30 "$SRC/cmake-configure.log" >&2; die 3 "prerequisite missing: llama.cpp's cmake configure failed (log: $SRC/cmake-configure.log)"; }
elapsed "cmake configured"
PATH="$DIR/bin:$PATH" "$DIR/bin/cmake" --build "$BUILD" --target llama-server -j "$JOBS" \
    >"$SRC/cmake-build.log" 2>&1 ||
    { tail -30 "$SRC/cmake-build.log" >&2; die 3 "prerequisite missing: building llama-server failed (log: $SRC/cmake-build.log)"; }
install -m 0755 "$BUILD/bin/llama-server" "$DIR/bin/llama-server"
cp "$LLAMA_SRC/LICENSE" "$DIR/llama.cpp-LICENSE"
rm -rf "$BUILD" "$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
elapsed "llama-server built"

VERSION=$("$DIR/bin/llama-server" --version 2>&1) || { echo "$VERSION" >&2; die 1 "llama-server --version failed"; }
echo "$VERSION" | grep -q "version:" || { echo "$VERSION" >&2; die 1 "llama-server --version said no version"; }
"$VPY" -m pip check --disable-pip-version-check >/dev/null ||
    { "$VPY" -m pip check --disable-pip-version-check >&2 || true; die 1 "pip check failed"; }
"$VPY" -c 'import gguf, numpy' || die 1 "gguf does not import"
elapsed "verified"

"$VPY" -m pip freeze --disable-pip-version-check >"$DIR/llamacpp-venv-freeze.txt"
echo "$VERSION" | grep -E "version:|built with" >"$DIR/llama-server-version.txt" || true
echo "$WANT_STAMP" >"$STAMP"
echo "llamacpp_venv: $DIR ready (llama-server from llama-cpp-python $LLAMA_CPP_PYTHON_VERSION:" \
    "$(head -1 "$DIR/llama-server-version.txt")); $(du -sh "$DIR" | cut -f1)"
elapsed "done"
