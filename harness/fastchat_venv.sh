#!/usr/bin/env bash
# Create (idempotently) a virtualenv holding real FastChat (fschat 0.2.36) for
# the end-to-end / interop tests.  FastChat is a PEER used only by tests: it is
# never a dependency of fastchat-gateway and none of its code is copied here.
#
# Usage:
#   bash harness/fastchat_venv.sh controller   DIR   # controller + openai_api_server
#   bash harness/fastchat_venv.sh model-worker DIR   # the above + CPU torch + transformers
#
# Exit codes:
#   0  venv ready (or already up to date: stamp matched)
#   2  usage error / DIR is not a venv we may (re)create
#   3  prerequisite missing: the CPU build of torch 2.13.0 is not installable
#   *  anything else: pip or the import check failed (message on stderr)
#
# Environment:
#   FASTCHAT_VENV_PYTHON    base interpreter for `-m venv` (default: python3)
#   FASTCHAT_TORCH_PIP_ARGS extra pip args for the torch step only, e.g. an
#                           --index-url pointing at PyTorch's own CPU index on
#                           machines that do not have the CPU wheel on disk.
#   PIP_CACHE_DIR etc.      honoured by pip as usual.
#
# The stamp file DIR/.fastchat-venv-stamp holds a hash of this script (and harness/peer_venv.sh), the mode
# and the base interpreter; when it matches, the script exits 0 at once.
# Changing any pin below therefore rebuilds the venv from scratch.
set -euo pipefail

usage() {
    echo "usage: $0 controller|model-worker DIR" >&2
    exit 2
}
[[ $# -eq 2 ]] || usage
MODE=$1
DIR=$2
case "$MODE" in
    controller | model-worker) ;;
    *) usage ;;
esac

PYTHON=${FASTCHAT_VENV_PYTHON:-python3}
SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
mkdir -p "$(dirname "$DIR")"
DIR=$(readlink -m "$DIR")
STAMP="$DIR/.fastchat-venv-stamp"

# --- pins -------------------------------------------------------------------
# Resolved by pip on 2026-11-23 on this machine (Python 3.11).  Transitive
# dependencies are pinned too so that a rebuild gives the same environment.
FSCHAT_PIN="fschat==0.2.36"

CONTROLLER_PINS=(
    # named by the FastChat doc (known to work together with fschat 0.2.36)
    fastapi==0.125.0
    starlette==0.50.0
    uvicorn==0.54.0
    pydantic==1.10.27 # pydantic 2 breaks 0.2.36's API-server streaming
    aiohttp==3.14.5
    httpx==0.28.1
    # fschat's other runtime requirements (installed with --no-deps above)
    requests==2.34.2
    shortuuid==1.0.13
    tiktoken==0.14.0
    numpy==2.4.6
    psutil==7.2.2
    prompt_toolkit==3.0.53
    rich==15.0.0
    markdown2==2.5.5
    nh3==0.3.8
    # transitive
    aiohappyeyeballs==2.7.1
    aiosignal==1.4.0
    annotated-doc==0.0.7
    anyio==4.16.0
    attrs==26.1.0
    certifi==2026.10.18
    charset-normalizer==3.5.2
    click==8.5.1
    frozenlist==1.8.0
    h11==0.16.0
    httpcore==1.0.9
    idna==3.20
    markdown-it-py==4.3.0
    mdurl==0.1.2
    multidict==7.2.1
    propcache==0.5.4
    Pygments==2.21.0
    regex==2026.11.15
    typing_extensions==4.16.0
    urllib3==2.8.0
    wcwidth==0.9.4
    yarl==1.25.1
)

TORCH_PIN="torch==2.13.0"

MODEL_WORKER_PINS=(
    # fschat[model_worker]==0.2.36 needs: accelerate, peft, sentencepiece,
    # torch, transformers, protobuf
    transformers==4.57.6 # 5.x crashes at worker start (KeyError: 'factor')
    tokenizers==0.22.2
    accelerate==1.15.0
    huggingface_hub==0.36.2
    peft==0.21.2
    sentencepiece==0.2.3
    protobuf==7.36.2
    # transitive
    filelock==4.2.12
    fsspec==2026.9.0
    hf-xet==1.8.0
    Jinja2==3.1.6
    MarkupSafe==3.0.4
    mpmath==1.3.0
    networkx==3.6.1
    packaging==26.3
    PyYAML==6.0.3
    safetensors==0.8.0
    sympy==1.14.0
    tqdm==4.70.1
)
# ---------------------------------------------------------------------------

NAME=fastchat_venv
# shellcheck source=harness/peer_venv.sh
source "$(dirname "$SCRIPT_PATH")/peer_venv.sh"
peer_venv_start python "$MODE venv" "mode=$MODE"

if [[ "$MODE" == model-worker ]]; then
    # Torch FIRST and pinned, so nothing later pulls a CUDA build.  Ask pip which
    # file it would take before installing anything: a version without the
    # "+cpu" label is the several-GB CUDA build from the registry.
    REPORT="$DIR/.torch-resolve.json"
    # shellcheck disable=SC2086  # FASTCHAT_TORCH_PIP_ARGS is a list of words
    if ! "${PIP[@]}" --dry-run --no-deps --only-binary :all: --report "$REPORT" \
        ${FASTCHAT_TORCH_PIP_ARGS:-} "$TORCH_PIN"; then
        die 3 "prerequisite missing: the CPU torch 2.13.0 wheel cannot be installed ('pip install $TORCH_PIN' found no distribution). It lies on disk on this workplace's machines (pip's find-links); elsewhere pass FASTCHAT_TORCH_PIP_ARGS='--index-url <PyTorch CPU index>'."
    fi
    TORCH_FOUND=$("$VPY" -c 'import json,sys; r=json.load(open(sys.argv[1])); i=r["install"][0]; print(i["metadata"]["version"], i["download_info"]["url"])' "$REPORT")
    rm -f "$REPORT"
    case "${TORCH_FOUND%% *}" in
        *+cpu) ;;
        *) die 3 "prerequisite missing: the CPU torch 2.13.0 wheel is not available; pip would install '${TORCH_FOUND}', a CUDA build (several GB of nvidia-* packages). Refusing. Put the CPU wheel in pip's find-links or pass FASTCHAT_TORCH_PIP_ARGS='--index-url <PyTorch CPU index>'." ;;
    esac
    echo "fastchat_venv: torch -> ${TORCH_FOUND}"
    # shellcheck disable=SC2086
    "${PIP[@]}" --only-binary :all: ${FASTCHAT_TORCH_PIP_ARGS:-} "$TORCH_PIN" ||
        die 3 "prerequisite missing: the CPU torch 2.13.0 wheel (${TORCH_FOUND}) failed to install"
    elapsed "torch installed"
fi

# fschat itself without its (unpinned) requirements; we pin them ourselves.
"${PIP[@]}" --no-deps "$FSCHAT_PIN"
elapsed "fschat installed"

REQS=("${CONTROLLER_PINS[@]}")
if [[ "$MODE" == model-worker ]]; then
    # torch repeated (already satisfied) so the resolver cannot move it.
    REQS+=("$TORCH_PIN" "${MODEL_WORKER_PINS[@]}")
fi
"${PIP[@]}" "${REQS[@]}"
elapsed "dependencies installed"

# --- verification -------------------------------------------------------------
"$VPY" -m pip check --disable-pip-version-check >/dev/null ||
    { "$VPY" -m pip check --disable-pip-version-check >&2 || true; die 1 "pip check failed"; }

# FastChat's logger swaps sys.stdout for a logging wrapper, so only the exit
# status of these checks is used.
"$VPY" -c "import fastchat.serve.controller, fastchat.conversation" >/dev/null 2>&1 ||
    { "$VPY" -c "import fastchat.serve.controller, fastchat.conversation" >&2 || true; die 1 "fastchat.serve.controller does not import"; }
# A benchmark runs FastChat's own OpenAI API server from this venv too.
"$VPY" -m fastchat.serve.openai_api_server --help >/dev/null 2>&1 ||
    die 1 "python -m fastchat.serve.openai_api_server --help failed"

if [[ "$MODE" == model-worker ]]; then
    "$VPY" - <<'EOF' >/dev/null 2>&1 || die 1 "model-worker imports failed (run: $VPY -c 'import fastchat.serve.model_worker')"
import fastchat.serve.model_worker, transformers, tokenizers, torch, peft
assert torch.__version__.endswith("+cpu"), torch.__version__
assert transformers.__version__ == "4.57.6", transformers.__version__
EOF
    CUDA_PKGS=$("$VPY" -m pip list --disable-pip-version-check --format=freeze |
        grep -iE '^(nvidia-|cuda-|triton)' || true)
    [[ -z "$CUDA_PKGS" ]] || die 1 "CUDA packages were installed, which must not happen: $CUDA_PKGS"
fi
elapsed "verified"

"$VPY" -m pip freeze --disable-pip-version-check >"$DIR/fastchat-venv-freeze.txt"
echo "$WANT_STAMP" >"$STAMP"
echo "fastchat_venv: $DIR ($MODE) ready; $(du -sh "$DIR" | cut -f1), $(wc -l <"$DIR/fastchat-venv-freeze.txt") packages"
elapsed "done"
