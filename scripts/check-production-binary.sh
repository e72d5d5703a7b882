#!/usr/bin/env bash
# Checks that the production binary is only the production code: the
# release `sluice` that `cargo run --release --bin sluice` builds must not
# contain the simulator's seam (turmoil, feature `sim`) nor any planted bug
# (feature `planted-bugs`). Both features are for `sluice-sim` alone; the
# workspace's default members keep them out of a plain build at the root.
#
#   scripts/check-production-binary.sh [BINARY]
#
# Without BINARY it builds target/release/sluice the README's way first.
# scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

binary="${1:-}"
if [[ -z "$binary" ]]; then
    cargo build --release --bin sluice --quiet
    binary="${CARGO_TARGET_DIR:-target}/release/sluice"
fi
[[ -x "$binary" ]] || { echo "check-production-binary: no executable at $binary" >&2; exit 1; }

# What each feature leaves behind in a binary that has it: turmoil's own
# source paths (panic locations, debug info) for `sim`; the planted code
# paths' log messages and the plants' names for `planted-bugs`.
failed=0
for marker in 'turmoil' 'planted ack-before-fsync' 'commit-on-minority'; do
    if LC_ALL=C grep -q -a -F -- "$marker" "$binary"; then
        echo "check-production-binary: $binary contains \"$marker\": the simulator's features reached the production build" >&2
        failed=1
    fi
done
if [[ $failed -eq 0 ]]; then
    echo "check-production-binary: $binary has neither turmoil nor planted bugs"
fi
exit "$failed"
