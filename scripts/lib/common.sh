# Shared by scripts/serve, scripts/test and scripts/bench: one virtualenv at .venv/.
# Idempotent: reinstalls only when setup.cfg, pyproject.toml or the lock file change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

ensure_venv() {
    local extras="$1"
    # Pinned versions with hashes (./scripts/lock writes both files).
    local lock="$ROOT/requirements.lock"
    [[ ",$extras," == *,test,* ]] && lock="$ROOT/requirements-test.lock"
    if [ ! -x "$PY" ]; then
        echo "madoguchi: creating virtualenv at .venv" >&2
        python3 -m venv "$VENV"
        "$PY" -m pip install -q --upgrade pip >&2
    fi
    local stamp="$VENV/.madoguchi-$extras"
    local want
    want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "$lock" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "madoguchi: installing Python packages ($extras, pinned by $(basename "$lock"))" >&2
        # Then the project itself, editable. A dependency added to setup.cfg since the last
        # ./scripts/lock is installed unpinned by this second step (tests/test_lock.py says so).
        if ! { "$PY" -m pip install -q --require-hashes -r "$lock" &&
               "$PY" -m pip install -q -e "$ROOT[$extras]"; } > "$VENV/pip-install.log" 2>&1; then
            cat "$VENV/pip-install.log" >&2
            echo "madoguchi: pip install failed (log above)" >&2
            exit 1
        fi
        echo "$want" > "$stamp"
    fi
}

# apt_ensure CMD-OR-PATH PACKAGE...: install Debian packages when the check fails.
MISSING_PKGS=()
need() {
    local check="$1"; shift
    if [[ "$check" == /* ]]; then [ -e "$check" ] && return 0
    else command -v "$check" >/dev/null 2>&1 && return 0; fi
    MISSING_PKGS+=("$@")
}
install_missing() {
    [ ${#MISSING_PKGS[@]} -eq 0 ] && return 0
    echo "madoguchi: installing Debian packages: ${MISSING_PKGS[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${MISSING_PKGS[@]}" >&2
    MISSING_PKGS=()
}
