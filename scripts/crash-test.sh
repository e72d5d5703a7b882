#!/usr/bin/env bash
# Crash test: no message the broker accepted may be lost to a kill -9.
#
#   1. builds the release binary and starts it on a fresh data directory,
#      on a free loopback port (read from its `sluice ready: amqp=ADDR` line);
#   2. a Proton client sends CRASH_MESSAGES (20,000) durable messages
#      unsettled to one queue, recording every id whose `accepted` it saw;
#   3. kill -9s the broker at a random moment: after 0.5-3 s, or once a random
#      number of acceptances has been recorded (the choice is printed);
#   4. restarts the broker on the same data directory and drains the queue
#      with a Proton receiver, accepting each message;
#   5. checks that every id seen accepted was received, and reports
#      duplicates (none are expected: the first phase only sends).
#
# Exits 0 only if nothing accepted was lost and nothing was received twice,
# corrupted or invented; prints a summary either way. Not part of CI (it
# takes a release build and tens of seconds), but must always run end to end.
#
# Environment (all optional):
#   CRASH_SEED              seeds the random choices (default: from $RANDOM)
#   CRASH_MESSAGES          messages to send (default 20000)
#   CRASH_KILL_AFTER_MS     kill after this many ms instead of a random choice
#   CRASH_KILL_AT_ACCEPTED  kill once this many acceptances were recorded
#   CRASH_KEEP              1 keeps the work directory (logs, id files)
#   CRASH_BINARY            a sluice binary to test instead of building
#                           target/release/sluice
#   SLUICE_PYTHON           a python with python-qpid-proton (default: the
#                           virtualenv scripts/test.sh makes, target/interop-venv)
#
# Only loopback addresses are used; every wait is bounded; the trap kills the
# processes this script started, by pid, on any exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESSAGES="${CRASH_MESSAGES:-20000}"
QUEUE="crash-test"
CLIENT=scripts/interop/crash_client.py
BINARY="${CRASH_BINARY:-target/release/sluice}"
READY_WAIT_S=60     # the restart replays the log: allow it time
SENDER_EXIT_WAIT_S=30

PYTHON="${SLUICE_PYTHON:-target/interop-venv/bin/python}"
if ! "$PYTHON" -c "import proton" 2>/dev/null; then
    echo "crash-test: $PYTHON has no python-qpid-proton; run scripts/test.sh once" \
         "(it installs target/interop-venv) or set SLUICE_PYTHON" >&2
    exit 2
fi

SEED="${CRASH_SEED:-$RANDOM}"
RANDOM="$SEED"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-crash.XXXXXX")"
DATA="$WORK/data"
mkdir -p "$DATA"
BROKER_PID=""
SENDER_PID=""

cleanup() {
    local status=$?
    for pid in "$SENDER_PID" "$BROKER_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ "${CRASH_KEEP:-0}" == 1 || $status -ne 0 ]]; then
        echo "crash-test: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "crash-test: $*" >&2; }

# Starts the broker on $DATA, logging to $1; sets BROKER_PID and BROKER_URL.
start_broker() {
    local log_file="$1"
    "$BINARY" --listen 127.0.0.1:0 --data-dir "$DATA" 2>"$log_file" >/dev/null &
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
    case "$addr" in
        127.*|\[::1\]*|localhost*) ;;
        *) log "the broker announced a non-loopback address: $addr"; exit 1 ;;
    esac
    BROKER_URL="amqp://$addr"
    log "broker $BROKER_PID ready at $BROKER_URL"
}

if [[ -z "${CRASH_BINARY:-}" ]]; then
    log "building the release binary"
    cargo build --release --bin sluice --quiet
fi

# Choose when to kill: a delay, or a count of recorded acceptances.
if [[ -n "${CRASH_KILL_AFTER_MS:-}" ]]; then
    MODE=delay; KILL_AFTER_MS="$CRASH_KILL_AFTER_MS"
elif [[ -n "${CRASH_KILL_AT_ACCEPTED:-}" ]]; then
    MODE=count; KILL_AT="$CRASH_KILL_AT_ACCEPTED"
elif (( RANDOM % 2 == 0 )); then
    MODE=delay; KILL_AFTER_MS=$((500 + RANDOM % 2501))
else
    MODE=count; KILL_AT=$(( (RANDOM * 32768 + RANDOM) % (MESSAGES - 1) + 1 ))
fi
if [[ "$MODE" == delay ]]; then
    log "seed $SEED: kill -9 ${KILL_AFTER_MS} ms after the sender starts"
else
    log "seed $SEED: kill -9 once $KILL_AT acceptances are recorded"
fi

start_broker "$WORK/broker-1.log"

ACCEPTED="$WORK/accepted.ids"
STATUS="$WORK/sender.json"
: >"$ACCEPTED"
"$PYTHON" "$CLIENT" send "$BROKER_URL" "$QUEUE" "$MESSAGES" "$ACCEPTED" "$STATUS" &
SENDER_PID=$!

if [[ "$MODE" == delay ]]; then
    sleep "$(printf '%d.%03d' $((KILL_AFTER_MS / 1000)) $((KILL_AFTER_MS % 1000)))"
else
    # Bounded: at most 300 s, and no longer than the sender runs.
    for (( i = 0; i < 6000; i++ )); do
        (( $(wc -l <"$ACCEPTED") >= KILL_AT )) && break
        kill -0 "$SENDER_PID" 2>/dev/null || break
        sleep 0.05
    done
fi
ACCEPTED_AT_KILL=$(wc -l <"$ACCEPTED")
if kill -0 "$SENDER_PID" 2>/dev/null; then
    log "kill -9 broker $BROKER_PID with $ACCEPTED_AT_KILL acceptances recorded"
else
    log "the sender finished before the kill ($ACCEPTED_AT_KILL acceptances); killing anyway"
fi
kill -KILL "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
BROKER_PID=""

# The sender notices the dropped connection and writes its status.
for (( i = 0; i < SENDER_EXIT_WAIT_S * 10; i++ )); do
    kill -0 "$SENDER_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$SENDER_PID" 2>/dev/null; then
    log "the sender did not exit within ${SENDER_EXIT_WAIT_S}s of the kill; killing it"
    kill -KILL "$SENDER_PID"
fi
wait "$SENDER_PID" 2>/dev/null || true
SENDER_PID=""
if [[ ! -s "$STATUS" ]]; then
    # Killed before it could write: what it sent is unknown, so count every
    # id as sent (only the accepted ones must come back).
    echo "{\"sent\": $MESSAGES, \"outcomes\": {}, \"error\": \"no status\"}" >"$STATUS"
fi

start_broker "$WORK/broker-2.log"
RECEIVED="$WORK/received.ids"
DRAIN_STATUS=0
"$PYTHON" "$CLIENT" drain "$BROKER_URL" "$QUEUE" "$RECEIVED" || DRAIN_STATUS=$?

kill -TERM "$BROKER_PID"
for (( i = 0; i < 100; i++ )); do
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
done
wait "$BROKER_PID" 2>/dev/null || true
BROKER_PID=""

VERIFY_STATUS=0
"$PYTHON" "$CLIENT" verify "$STATUS" "$ACCEPTED" "$RECEIVED" || VERIFY_STATUS=$?
if (( DRAIN_STATUS != 0 )); then
    log "the drain ended with an error (see above)"
fi
if (( VERIFY_STATUS != 0 || DRAIN_STATUS != 0 )); then
    log "FAILED (seed $SEED; rerun with CRASH_SEED=$SEED)"
    exit 1
fi
log "passed (seed $SEED)"
