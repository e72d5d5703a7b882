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
# Needs: a Rust toolchain (cargo), python3 with venv,
# Node.js (20 or newer) with npm, g++, and network access to PyPI, the npm
# registry and Debian's packages on the first run (apt-get, as root or
# through sudo).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The Python clients, in one virtualenv that the tests find through
# SLUICE_PYTHON. It lives under target/, so a fresh clone makes its own and
# `cargo clean` removes it.
# - Qpid Proton's, for broker/tests/interop_proton.rs.
# - uAMQP (the Azure uAMQP C library's binding; a cp311 manylinux wheel, no
#   build) and the Azure SDK's pure-Python AMQP stack (azure.servicebus's
#   _pyamqp), for broker/tests/interop_azure.rs. uAMQP speaks only TLS: its
#   test gives the broker a TLS listener, with certificates the test makes.
# The check imports each and compares the installed versions with the pins:
# a later run skips pip, and a changed pin reinstalls.
PROTON_VERSION=0.40.0
UAMQP_VERSION=1.6.11
AZURE_SERVICEBUS_VERSION=7.15.0
PYTHON_CLIENTS=(
    "python-qpid-proton==$PROTON_VERSION"
    "uamqp==$UAMQP_VERSION"
    "azure-servicebus==$AZURE_SERVICEBUS_VERSION"
)
PYTHON_VENV=target/interop-venv

python_clients_installed() {
    "$1" - "${PYTHON_CLIENTS[@]}" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version

import azure.servicebus._pyamqp
import proton
import uamqp

pins = (pin.split("==") for pin in sys.argv[1:])
sys.exit(any(version(name) != want for name, want in pins))
EOF
}

install_python_clients() {
    local python="$PYTHON_VENV/bin/python"
    if ! python_clients_installed "$python"; then
        echo "test.sh: installing ${PYTHON_CLIENTS[*]} into $PYTHON_VENV" >&2
        python3 -m venv "$PYTHON_VENV"
        "$python" -m pip install --quiet --disable-pip-version-check "${PYTHON_CLIENTS[@]}"
        python_clients_installed "$python" || {
            echo "test.sh: $PYTHON_VENV still lacks one of ${PYTHON_CLIENTS[*]}" >&2
            exit 1
        }
    fi
    SLUICE_PYTHON="$PWD/$python"
    export SLUICE_PYTHON
}

# rhea, the Node.js client, for broker/tests/interop_rhea.rs, and
# playwright-core, which drives chromium for broker/tests/console.rs (it
# downloads no browser: the script launches Debian's, installed below); both
# tests find node through SLUICE_NODE. `npm ci` installs exactly what the
# committed scripts/interop/package-lock.json pins into
# scripts/interop/node_modules (git-ignored), where the scripts' require()
# finds them. A stamp holding the lock file's hash skips the install while
# the lock is unchanged.
NODE_CLIENTS=scripts/interop

install_node_clients() {
    local node
    node="$(command -v "${SLUICE_NODE:-node}")" || {
        echo "test.sh: node not found: install Node.js 20 or newer (with npm)" >&2
        exit 1
    }
    local stamp="$NODE_CLIENTS/node_modules/.sluice-lock-sha256"
    local want
    want="$(sha256sum "$NODE_CLIENTS/package-lock.json" | cut -d' ' -f1)"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]] \
        || ! (cd "$NODE_CLIENTS" && "$node" -e "require('rhea'); require('playwright-core')") \
            2>/dev/null; then
        echo "test.sh: installing rhea and playwright-core into $NODE_CLIENTS/node_modules (npm ci)" >&2
        (cd "$NODE_CLIENTS" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
        echo "$want" >"$stamp"
    fi
    SLUICE_NODE="$node"
    export SLUICE_NODE
}

# Qpid Proton's C++ binding, for broker/tests/interop_proton_cpp.rs, which
# finds the client built from scripts/interop/proton_cpp.cpp through
# SLUICE_PROTON_CPP. The library and headers are Debian's
# libqpid-proton-cpp12-dev (0.37), installed if its headers are missing; the
# client is rebuilt when its source is newer than the binary.
CPP_CLIENT_SOURCE=scripts/interop/proton_cpp.cpp
CPP_CLIENT="${CARGO_TARGET_DIR:-target}/interop-cpp/proton_cpp"

install_cpp_client() {
    if [[ ! -f /usr/include/proton/container.hpp ]]; then
        echo "test.sh: installing libqpid-proton-cpp12-dev (apt-get)" >&2
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            libqpid-proton-cpp12-dev >/dev/null
    fi
    if [[ ! -x "$CPP_CLIENT" || "$CPP_CLIENT_SOURCE" -nt "$CPP_CLIENT" ]]; then
        echo "test.sh: building $CPP_CLIENT" >&2
        mkdir -p "$(dirname "$CPP_CLIENT")"
        g++ -std=c++17 -O1 -Wall -Werror -o "$CPP_CLIENT" "$CPP_CLIENT_SOURCE" -lqpid-proton-cpp
    fi
    SLUICE_PROTON_CPP="$(realpath "$CPP_CLIENT")"
    export SLUICE_PROTON_CPP
}

# Chromium, for sim/tests/html.rs, which renders the simulator's timeline
# page headless (a screenshot, and the DOM after its script ran), and for
# broker/tests/console.rs, which drives the web console in it. Debian's
# package, installed if the command is missing; html.rs finds it on PATH,
# console.rs at /usr/bin/chromium (SLUICE_CHROMIUM overrides both; a path
# for console.rs), and both fail under CI=true without it.
install_chromium() {
    if ! command -v "${SLUICE_CHROMIUM:-chromium}" >/dev/null; then
        echo "test.sh: installing chromium (apt-get)" >&2
        local sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            chromium >/dev/null
    fi
}

# The simulator's own gate, beyond its tests: the determinism check on three
# seeds of one node and of 3- and 5-node clusters, explorations with every
# fault kind on and each seed's profile drawn from it (`mix`: default,
# slow-net, lossy-net or bad-disk) of 500 seeds of one node and of 3-node
# clusters and 300 of 5-node clusters, and 200 seeds of the Raft world
# (about three minutes in all, in the `sim` profile: optimised, with debug
# assertions and the queue and node invariants on). Longer explorations:
# docs/simulation.md.
simulate() {
    cargo build --profile sim -p sluice-sim
    local sim="${CARGO_TARGET_DIR:-target}/sim/sluice-sim"
    local -A seeds=([1]=1..501 [3]=1..501 [5]=1..301)
    for nodes in 1 3 5; do
        for seed in 1 2 3; do
            "$sim" run --seed "$seed" --nodes "$nodes" --faults net,crash,disk,clock \
                --check-determinism --no-replay
        done
        "$sim" explore --seeds "${seeds[$nodes]}" --nodes "$nodes" --jobs 2 \
            --faults net,crash,disk,clock --profile mix --no-replay
    done
    "$sim" raft --seeds 1..201
}

install_python_clients
install_node_clients
install_cpp_client
install_chromium
cargo test --workspace --all-features "$@" -- --include-ignored
# Extra arguments select tests; the simulator gate, the check that the
# production binary holds neither the simulator's seam nor a planted bug,
# and the cluster kill test (three release binaries, kill -9 of the queue's
# leader; about a minute) run with the full suite.
if [[ $# -eq 0 ]]; then
    simulate
    scripts/check-production-binary.sh
    scripts/cluster-kill-test.sh
fi
