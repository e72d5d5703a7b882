#!/usr/bin/env bash
# Full-disk test (issue 12, item 6): a disk filled by producers must be freed
# by consuming, without a restart, and what was consumed must stay consumed.
#
#   1. builds the release binaries (sluice, sluice-bench) and mounts a tmpfs
#      of FULL_DISK_MIB (64) MiB as the broker's data directory;
#   2. a producer sends FULL_DISK_MESSAGES (20,000) durable messages of
#      FULL_DISK_BODY_BYTES (4 KiB) to one queue: the disk must fill (some
#      `rejected`, some `accepted`);
#   3. a consumer drains the queue: it must receive every accepted message;
#   4. a producer sends FULL_DISK_AFTER (100) more: every one must be
#      accepted, tried for up to 10 s while the broker frees its disk;
#   5. restarts the broker and drains again: exactly those must come back,
#      none of the messages consumed before the restart.
#
# Prints what each phase saw and the disk's use; exits 0 only if every check
# holds, 1 if one fails, 2 if it cannot run (not root, or no tmpfs mount
# allowed here). Not part of CI (it takes release builds); it needs root for
# the mount. Only loopback addresses are used; every wait is bounded; the trap
# stops the broker it started, by pid, and unmounts the disk.
#
# Environment (all optional):
#   FULL_DISK_MIB        size of the tmpfs (default 64)
#   FULL_DISK_MESSAGES   messages sent to fill it (default 20000)
#   FULL_DISK_AFTER      messages sent after the drain (default 100)
#   FULL_DISK_BODY_BYTES each message's body (default 4096; with 65536 and
#                        2000 messages the settles fit in what the fill left)
#   FULL_DISK_FREE_MIN   limits.disk_free_min_bytes (default 0: off, so that
#                        producers fill the disk and the reserve frees it;
#                        with it on they are blocked before, and the first
#                        check fails)
#   FULL_DISK_BINARY     a sluice binary to test instead of building one
#   FULL_DISK_BENCH      a sluice-bench binary instead of building one
#   FULL_DISK_KEEP       1 keeps the work directory (broker logs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DISK_MIB="${FULL_DISK_MIB:-64}"
MESSAGES="${FULL_DISK_MESSAGES:-20000}"
AFTER="${FULL_DISK_AFTER:-100}"
TARGET="${CARGO_TARGET_DIR:-target}"
BINARY="${FULL_DISK_BINARY:-$TARGET/release/sluice}"
BENCH="${FULL_DISK_BENCH:-$TARGET/release/sluice-bench}"
QUEUE="full-disk"
READY_WAIT_S=60
BODY_BYTES="${FULL_DISK_BODY_BYTES:-4096}"

log() { echo "full-disk-test: $*" >&2; }

if [[ "$(id -u)" != 0 ]]; then
    log "skipped: mounting a tmpfs needs root"
    exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-full-disk.XXXXXX")"
DISK="$WORK/disk"
DATA="$DISK/data"
mkdir -p "$DISK"
BROKER_PID=""
MOUNTED=0

cleanup() {
    local status=$?
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    if (( MOUNTED )); then
        umount "$DISK" || log "could not unmount $DISK"
    fi
    if [[ "${FULL_DISK_KEEP:-0}" == 1 || $status -ne 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! mount -t tmpfs -o "size=${DISK_MIB}m" tmpfs "$DISK" 2>"$WORK/mount.err"; then
    log "skipped: cannot mount a tmpfs here: $(cat "$WORK/mount.err")"
    exit 2
fi
MOUNTED=1

if [[ -z "${FULL_DISK_BINARY:-}" || -z "${FULL_DISK_BENCH:-}" ]]; then
    log "building the release binaries"
    cargo build --release --quiet --bin sluice -p sluice
    cargo build --release --quiet -p sluice-bench
fi

disk_use() {
    df -k "$DISK" | awk 'NR == 2 { printf "%d of %d KiB used", $3, $2 }'
}

# Starts the broker on $DATA, logging to $1; sets BROKER_PID and BROKER_URL.
start_broker() {
    local log_file="$1"
    "$BINARY" --listen 127.0.0.1:0 --data-dir "$DATA" --config "$WORK/sluice.toml" \
        2>"$log_file" >/dev/null &
    BROKER_PID=$!
    local waited=0 addr=""
    while (( waited < READY_WAIT_S * 10 )); do
        addr="$(grep -o -m1 'sluice ready: amqp=[^ "]*' "$log_file" 2>/dev/null \
            | sed 's/.*amqp=//' || true)"
        [[ -n "$addr" ]] && break
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            log "the broker exited before it was ready; its log:"
            cat "$log_file" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    if [[ -z "$addr" ]]; then
        log "no ready line within ${READY_WAIT_S}s; log in $log_file"
        exit 1
    fi
    BROKER_URL="amqp://$addr"
    log "broker $BROKER_PID ready at $BROKER_URL"
}

stop_broker() {
    kill -TERM "$BROKER_PID"
    for (( i = 0; i < 100; i++ )); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

# Runs sluice-bench with "$@" against the broker; prints its JSON report.
bench() {
    timeout 300 "$BENCH" --url "$BROKER_URL" --address "$QUEUE" --json --quiet "$@"
}

# The field $2 of the JSON report $1.
field() {
    python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# Sends $1 durable messages of BODY_BYTES; prints the report.
produce() {
    bench --producers 1 --consumers 0 --count "$1" --size "$BODY_BYTES" --window 100
}

# Receives and accepts until nothing arrives for 3 s; prints the report.
# Messages of earlier runs count as "stale".
drain() {
    bench --producers 0 --consumers 1 --duration 1s --drain-timeout 3s
}

FAILED=0
check() {
    if eval "$1"; then
        log "ok: $2"
    else
        log "FAILED: $2"
        FAILED=1
    fi
}

printf '[limits]\ndisk_free_min_bytes = %d\n' "${FULL_DISK_FREE_MIN:-0}" >"$WORK/sluice.toml"
start_broker "$WORK/broker-1.log"
log "before filling: $(disk_use)"

FILL="$(produce "$MESSAGES")"
FILLED="$(field "$FILL" accepted)"
REFUSED="$(field "$FILL" rejected)"
log "fill: $FILLED of $MESSAGES accepted, $REFUSED rejected; $(disk_use)"
check '(( FILLED > 0 && REFUSED > 0 ))' "the disk filled (some accepted, some rejected)"

DRAIN="$(drain)"
DRAINED="$(field "$DRAIN" stale)"
log "drain: $DRAINED received; $(disk_use)"
check '(( DRAINED == FILLED ))' "the drain received every accepted message"

# Sent again while rejected, in case the broker is still freeing its disk.
ACCEPTED_AFTER=0
TRIES=0
while (( ACCEPTED_AFTER < AFTER && TRIES < 10 )); do
    (( TRIES > 0 )) && sleep 1
    TRIES=$((TRIES + 1))
    LATE="$(produce $((AFTER - ACCEPTED_AFTER)))"
    ACCEPTED_AFTER=$((ACCEPTED_AFTER + $(field "$LATE" accepted)))
done
log "after the drain: $ACCEPTED_AFTER of $AFTER accepted in $TRIES tries; $(disk_use)"
check '(( ACCEPTED_AFTER == AFTER ))' "publishing resumed without a restart"

stop_broker
start_broker "$WORK/broker-2.log"
AGAIN="$(drain)"
AGAIN_STALE="$(field "$AGAIN" stale)"
log "after a restart: $AGAIN_STALE received; $(disk_use)"
check '(( AGAIN_STALE == ACCEPTED_AFTER ))' \
    "after a restart only the late messages came back, none consumed before"
stop_broker

if (( FAILED )); then
    log "FAILED; broker logs in $WORK"
    exit 1
fi
log "passed"
