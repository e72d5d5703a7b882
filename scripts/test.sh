#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test in
# the workspace. README's set-up runs it, and so does .ci/run.
#
#   --all-features      turns on `sim`, the turmoil seam that the simulation
#                       tests (broker/tests/turmoil_handshake.rs) need;
#   --include-ignored   runs the tests marked #[ignore] because they need a
#                       client this script installs: plain `cargo test`
#                       skips them, this script never does.
#
# Extra arguments go to cargo, e.g. `scripts/test.sh -p sluice --test cli`.
# Needs: a Rust toolchain (cargo), python3 with venv, and network access to
# PyPI on the first run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Qpid Proton's Python client, for broker/tests/interop_proton.rs, which
# finds it through SLUICE_PYTHON. The virtualenv lives under target/, so a
# fresh clone makes its own and `cargo clean` removes it.
PROTON_VERSION=0.40.0
PYTHON_VENV=target/interop-venv

install_python_clients() {
    local python="$PYTHON_VENV/bin/python"
    if ! "$python" -c "import proton" 2>/dev/null; then
        echo "test.sh: installing python-qpid-proton $PROTON_VERSION into $PYTHON_VENV" >&2
        python3 -m venv "$PYTHON_VENV"
        "$python" -m pip install --quiet --disable-pip-version-check \
            "python-qpid-proton==$PROTON_VERSION"
    fi
    SLUICE_PYTHON="$PWD/$python"
    export SLUICE_PYTHON
}

# Node.js clients (rhea, from the npm registry) get their own function here,
# installed with `npm ci` from a lock file committed next to their scripts in
# scripts/interop/, when the first test needs them.

install_python_clients
exec cargo test --workspace --all-features "$@" -- --include-ignored
