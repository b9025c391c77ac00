#!/usr/bin/env bash
# Create (idempotently) a virtualenv holding LiteLLM's proxy (litellm[proxy]) for
# the end-to-end tests that put LiteLLM between the gateway and an upstream.
# LiteLLM is a PEER used only by tests: it is never a dependency of
# fastchat-gateway, and none of its code is imported by the gateway or copied here.
#
# Usage:
#   bash harness/litellm_venv.sh DIR
#
# Exit codes:
#   0  venv ready (or already up to date: stamp matched)
#   2  usage error / DIR is not a venv we may (re)create
#   3  prerequisite missing: litellm[proxy] could not be installed
#   *  anything else: the import/CLI check failed (message on stderr)
#
# Environment:
#   LITELLM_VENV_PYTHON  base interpreter for `-m venv` (default: python3)
#   PIP_CACHE_DIR etc.   honoured by pip as usual.
#
# The stamp file DIR/.litellm-venv-stamp holds a hash of this script (and harness/peer_venv.sh), of
# harness/litellm_constraints.txt and of the base interpreter; when it matches,
# the script exits 0 at once.  Changing the pin rebuilds the venv from scratch.
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR=$1

PYTHON=${LITELLM_VENV_PYTHON:-python3}
SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
CONSTRAINTS="$(dirname "$SCRIPT_PATH")/litellm_constraints.txt"
mkdir -p "$(dirname "$DIR")"
DIR=$(readlink -m "$DIR")
STAMP="$DIR/.litellm-venv-stamp"

# --- pin --------------------------------------------------------------------
# 1.106.12, checked on 2026-12-04: the newest release whose [proxy] extra
# installs from the registry here.  1.110.x needs a separate `litellm-proxy`
# package and 1.108.x a `litellm-proxy-extras` release that the registry does
# not serve; 1.107.0 was a compromised release and has been pulled (never pin
# 1.107.x).  The transitive dependencies are pinned by
# harness/litellm_constraints.txt (pip freeze of that build, Python 3.11), so a
# rebuild gives the same environment.
LITELLM_VERSION=1.106.12
LITELLM_PIN="litellm[proxy]==$LITELLM_VERSION"
# ---------------------------------------------------------------------------

NAME=litellm_venv
# shellcheck source=harness/peer_venv.sh
source "$(dirname "$SCRIPT_PATH")/peer_venv.sh"
peer_venv_start litellm "venv"

CARGS=()
if [[ -f "$CONSTRAINTS" ]]; then CARGS=(-c "$CONSTRAINTS"); fi
"${PIP[@]}" --only-binary :all: "${CARGS[@]}" "$LITELLM_PIN" ||
    die 3 "prerequisite missing: 'pip install $LITELLM_PIN' failed (see pip's output above)"
elapsed "litellm[proxy] installed"

"$VPY" -m pip check --disable-pip-version-check >/dev/null ||
    { "$VPY" -m pip check --disable-pip-version-check >&2 || true; die 1 "pip check failed"; }
GOT=$("$VPY" -c 'import importlib.metadata as m; print(m.version("litellm"))')
[[ "$GOT" == "$LITELLM_VERSION" ]] || die 1 "litellm $GOT installed, $LITELLM_VERSION wanted"
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False "$DIR/bin/litellm" --help >/dev/null 2>&1 ||
    die 1 "$DIR/bin/litellm --help failed (run it to see why)"
elapsed "verified"

"$VPY" -m pip freeze --disable-pip-version-check >"$DIR/litellm-venv-freeze.txt"
echo "$WANT_STAMP" >"$STAMP"
echo "litellm_venv: $DIR ready (litellm $GOT); $(du -sh "$DIR" | cut -f1), $(wc -l <"$DIR/litellm-venv-freeze.txt") packages"
elapsed "done"
