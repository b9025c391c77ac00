# Sourced by the peer folder builders (fastchat_venv.sh, litellm_venv.sh, llamacpp_venv.sh): their common steps.
# The builder sets, before calling peer_venv_start: NAME (its message prefix), DIR (absolute), PYTHON (the base
# interpreter), SCRIPT_PATH (itself), STAMP (its stamp file) and, if it has one, CONSTRAINTS (a pip constraints file).
PEER_VENV_LIB=$(readlink -f "${BASH_SOURCE[0]}")
T0=$(date +%s.%N)
LAST=$T0

elapsed() { # elapsed LABEL: print time since the previous step and since start
    local now
    now=$(date +%s.%N)
    awk -v n="$NAME" -v l="$1" -v a="$LAST" -v b="$now" -v t="$T0" \
        'BEGIN { printf "%s: %-28s %6.1fs  (total %6.1fs)\n", n, l, b - a, b - t }'
    LAST=$now
}

die() { # die CODE MESSAGE
    echo "$NAME: $2" >&2
    exit "$1"
}

# peer_venv_start BINARY LABEL [STAMP LINE...]: serialise runs for DIR; exit 0 at once when the stamp (a hash of the
# builder, this file, CONSTRAINTS, the STAMP LINEs and the base interpreter) matches and DIR/bin/BINARY exists;
# else make DIR a fresh virtualenv (only ever wiping an empty folder or a virtualenv) and set VPY, PIP, WANT_STAMP.
peer_venv_start() {
    local binary=$1 label=$2
    shift 2
    exec 9>"${TMPDIR:-/tmp}/$NAME-$(printf '%s' "$DIR" | sha256sum | cut -c1-16).lock"
    if command -v flock >/dev/null 2>&1; then
        flock 9
    fi
    PY_ID=$("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.executable)') ||
        die 2 "base interpreter '$PYTHON' does not run"
    WANT_STAMP=$( {
        sha256sum <"$SCRIPT_PATH"
        sha256sum <"$PEER_VENV_LIB"
        if [[ -n "${CONSTRAINTS:-}" && -f "$CONSTRAINTS" ]]; then sha256sum <"$CONSTRAINTS"; fi
        printf '%s\n' "$@"
        echo "python=$PY_ID"
    } | sha256sum | cut -c1-64)
    if [[ -f "$STAMP" && -x "$DIR/bin/$binary" && "$(cat "$STAMP")" == "$WANT_STAMP" ]]; then
        echo "$NAME: $DIR $label up to date"
        exit 0
    fi
    if [[ -d "$DIR" && -n "$(ls -A "$DIR")" && ! -f "$DIR/pyvenv.cfg" ]]; then
        die 2 "$DIR exists, is not empty and is not a virtualenv; refusing to touch it"
    fi
    echo "$NAME: building $label in $DIR (python $PY_ID)"
    rm -f "$STAMP"
    "$PYTHON" -m venv --clear "$DIR"
    VPY="$DIR/bin/python"
    PIP=("$VPY" -m pip install --disable-pip-version-check --no-input --quiet)
    elapsed "venv created"
}
