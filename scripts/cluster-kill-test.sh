#!/usr/bin/env bash
# Cluster kill test: real processes, real kill -9s. No message a three-node
# cluster accepted may be lost when the leader of its queue's group dies.
#
#   1. builds the release binary (or takes CLUSTER_KILL_BINARY), picks free
#      loopback ports, writes one TOML configuration and one data directory
#      per node, and starts three `sluice` processes, waiting for each one's
#      `sluice ready: amqp=ADDR` line;
#   2. starts scripts/cluster_kill_client.py, a Qpid Proton client that sends
#      CLUSTER_KILL_MESSAGES (50,000) durable messages to queue `orders` on
#      node 2 (CLUSTER_KILL_RATE, 1,000 a second) while it receives them from
#      node 3, recording every acceptance and every delivery; when a
#      connection drops it reconnects to the same node and sends again
#      whatever was not accepted (at-least-once);
#   3. meanwhile, at least twice: finds the leader of the queue's Raft group
#      from the nodes' logs (`declaring a queue queue="orders" group=G`, then
#      each live node's newest `group leader known group=G leader=L`; the
#      live nodes must agree), kill -9s it, waits until the survivors agree
#      on a new leader (and, if the producer's node is up, until it sees an
#      acceptance again) and at least CLUSTER_KILL_DOWN_S, then restarts it
#      with the same configuration and data directory and waits until it
#      knows the leader again. Beyond the two kills it goes on killing
#      leaders (up to CLUSTER_KILL_MAX) until each node was killed as leader
#      once: node 1 (no client on it), node 2 (the producer's connection
#      dies: it must reconnect and send again) and node 3 (the consumer's);
#      Before the first restart it flips a bit in the killed node's Raft log
#      (CLUSTER_KILL_DAMAGE): the node must find the damage, cut its log
#      back and rejoin every group, voting again only once caught up, which
#      it must do within REJOIN_WAIT_S;
#   4. once the client is done, checks that every accepted id was received
#      and prints the summary: sent, accepted, received, duplicates, and per
#      kill its time and the failover gap the producer saw.
#
# Exits 0 only if every accepted message was received intact and the run
# completed; duplicates are reported, not failures. The test phase is
# bounded by CLUSTER_KILL_TIME_LIMIT_S (170 s) and every wait in it by its
# own timeout; the trap kills every process this script started, by pid, on
# any exit. scripts/test.sh runs it after the other tests (about a minute).
#
# Environment (all optional):
#   CLUSTER_KILL_MESSAGES      messages to send (default 50000)
#   CLUSTER_KILL_RATE          new messages a second (default 1000, so that
#                              sending spans the kills, about 50 s, and a
#                              kill usually finds messages in flight; 0 = as
#                              fast as the broker allows)
#   CLUSTER_KILL_MAX           the most leader kills (default 4; at least 2
#                              are always made)
#   CLUSTER_KILL_DOWN_S        the least time a killed node stays down (2)
#   CLUSTER_KILL_DAMAGE        1 (default) damages the first killed node's
#                              Raft log before its restart; 0 does not
#   CLUSTER_KILL_SEED          the nodes' `seed` (election timeouts); default
#                              random, printed. Timing still varies run to run
#   CLUSTER_KILL_TIME_LIMIT_S  bound on the whole test phase (170)
#   CLUSTER_KILL_KEEP          1 keeps the work directory (logs, id files);
#                              it is always kept when the test fails
#   CLUSTER_KILL_BINARY        a sluice binary to test instead of building
#                              ${CARGO_TARGET_DIR:-target}/release/sluice
#   SLUICE_PYTHON              a python with python-qpid-proton (default: the
#                              virtualenv scripts/test.sh makes,
#                              target/interop-venv, installed if missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESSAGES="${CLUSTER_KILL_MESSAGES:-50000}"
RATE="${CLUSTER_KILL_RATE:-1000}"
KILLS_MIN=2
KILLS_MAX="${CLUSTER_KILL_MAX:-4}"
DOWN_MIN_S="${CLUSTER_KILL_DOWN_S:-2}"
DAMAGE="${CLUSTER_KILL_DAMAGE:-1}"
TIME_LIMIT_S="${CLUSTER_KILL_TIME_LIMIT_S:-170}"
QUEUE=orders
NODES=3
PRODUCER_NODE=2
CONSUMER_NODE=3
CLIENT=scripts/cluster_kill_client.py

# Bounds on single waits (seconds).
READY_WAIT_S=60     # a restart replays the node's Raft log
GROUP_WAIT_S=30     # the client's attach declares the queue
LEADER_WAIT_S=20    # the survivors elect a new leader
PROGRESS_WAIT_S=20  # the producer sees an acceptance after a failover
REJOIN_WAIT_S=30    # a restarted node learns the leader again
STOP_WAIT_S=10      # a node stops on SIGTERM

log() { echo "$(date +%H:%M:%S.%3N) cluster-kill-test: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
(( KILLS_MAX >= KILLS_MIN )) || die "CLUSTER_KILL_MAX must be at least $KILLS_MIN"
(( MESSAGES >= 1000 )) || die "CLUSTER_KILL_MESSAGES must be at least 1000"

# Qpid Proton's Python client, installed the way scripts/test.sh does.
PROTON_VERSION=0.40.0
PYTHON_VENV=target/interop-venv
if [[ -n "${SLUICE_PYTHON:-}" ]]; then
    PYTHON="$SLUICE_PYTHON"
else
    PYTHON="$PYTHON_VENV/bin/python"
    if ! "$PYTHON" -c "import proton" 2>/dev/null; then
        log "installing python-qpid-proton $PROTON_VERSION into $PYTHON_VENV"
        python3 -m venv "$PYTHON_VENV"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check \
            "python-qpid-proton==$PROTON_VERSION"
    fi
fi
"$PYTHON" -c "import proton" 2>/dev/null \
    || die "$PYTHON cannot import proton (python-qpid-proton)"

BINARY="${CLUSTER_KILL_BINARY:-${CARGO_TARGET_DIR:-target}/release/sluice}"
if [[ -z "${CLUSTER_KILL_BINARY:-}" ]]; then
    log "building the release binary"
    cargo build --release --bin sluice --quiet
fi
[[ -x "$BINARY" ]] || die "no executable at $BINARY"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-cluster-kill.XXXXXX")"
CLIENT_PID=""
REPORTED=0
declare -a PID LOG CONF AMQP_PORT CLUSTER_PORT STARTS

cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    if [[ -n "$CLIENT_PID" ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then
        kill -KILL "$CLIENT_PID" 2>/dev/null || true
        wait "$CLIENT_PID" 2>/dev/null || true
    fi
    for (( i = 1; i <= NODES; i++ )); do
        if [[ -n "${PID[i]:-}" ]] && kill -0 "${PID[i]}" 2>/dev/null; then
            kill -KILL "${PID[i]}" 2>/dev/null || true
            wait "${PID[i]}" 2>/dev/null || true
        fi
    done
    if (( status != 0 && REPORTED == 0 )) && [[ -s "$WORK/accepted.log" ]]; then
        log "what the client recorded before the run was aborted" \
            "(\"missing\" includes messages still on their way):"
        "$PYTHON" "$CLIENT" report "$WORK" >&2 || true
    fi
    if [[ "${CLUSTER_KILL_KEEP:-0}" == 1 || $status -ne 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STARTED_AT=$SECONDS
DEADLINE=$(( SECONDS + TIME_LIMIT_S ))
# Fails the run if the test phase has used up its time; $1 says what waits.
check_deadline() {
    (( SECONDS < DEADLINE )) \
        || die "the run exceeded CLUSTER_KILL_TIME_LIMIT_S=${TIME_LIMIT_S}s while $1"
}
now() { date +%s.%N; }

# Six free loopback ports: AMQP and cluster for each node.
mapfile -t FREE_PORTS < <("$PYTHON" "$CLIENT" ports $(( 2 * NODES )))
(( ${#FREE_PORTS[@]} == 2 * NODES )) || die "could not pick free ports"
SECRET="$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
SEED="${CLUSTER_KILL_SEED:-$(( RANDOM * 32768 + RANDOM ))}"
for (( i = 1; i <= NODES; i++ )); do
    AMQP_PORT[i]=${FREE_PORTS[2 * i - 2]}
    CLUSTER_PORT[i]=${FREE_PORTS[2 * i - 1]}
done
for (( i = 1; i <= NODES; i++ )); do
    mkdir -p "$WORK/node$i/data"
    CONF[i]="$WORK/node$i/sluice.toml"
    STARTS[i]=0
    PID[i]=""
    (
        umask 077   # the file holds the cluster's secret
        {
            echo "listen = \"127.0.0.1:${AMQP_PORT[i]}\""
            echo "data_dir = \"$WORK/node$i/data\""
            echo "seed = $SEED"
            echo
            echo "[cluster]"
            echo "node_id = $i"
            echo "listen = \"127.0.0.1:${CLUSTER_PORT[i]}\""
            echo "secret = \"$SECRET\""
            for (( j = 1; j <= NODES; j++ )); do
                (( j == i )) && continue
                echo
                echo "[[cluster.peer]]"
                echo "id = $j"
                echo "address = \"127.0.0.1:${CLUSTER_PORT[j]}\""
            done
        } >"${CONF[i]}"
    )
done

# Fails the run if a node that should be up has exited.
check_nodes_alive() {
    local i
    for (( i = 1; i <= NODES; i++ )); do
        if [[ -n "${PID[i]}" ]] && ! kill -0 "${PID[i]}" 2>/dev/null; then
            log "node $i (pid ${PID[i]}) exited on its own; the end of ${LOG[i]}:"
            tail -n 30 "${LOG[i]}" >&2
            PID[i]=""
            die "node $i died while $1"
        fi
    done
}

# Starts node $1 with its configuration and data directory, logging to a new
# file, and waits for its ready line.
start_node() {
    local i=$1 addr="" want
    STARTS[i]=$(( STARTS[i] + 1 ))
    LOG[i]="$WORK/node$i/sluice.${STARTS[i]}.log"
    "$BINARY" --config "${CONF[i]}" 2>"${LOG[i]}" >/dev/null &
    PID[i]=$!
    local until=$(( SECONDS + READY_WAIT_S ))
    while :; do
        addr="$(grep -o -m1 'sluice ready: amqp=[^ "]*' "${LOG[i]}" 2>/dev/null \
            | sed 's/.*amqp=//' || true)"
        [[ -n "$addr" ]] && break
        if ! kill -0 "${PID[i]}" 2>/dev/null; then
            PID[i]=""
            log "node $i exited before it was ready; its log:"
            cat "${LOG[i]}" >&2
            die "node $i did not start (a port taken in the meantime? rerun)"
        fi
        (( SECONDS < until )) || die "node $i: no ready line within ${READY_WAIT_S}s (${LOG[i]})"
        check_deadline "waiting for node $i to be ready"
        sleep 0.05
    done
    want="127.0.0.1:${AMQP_PORT[i]}"
    [[ "$addr" == "$want" ]] || die "node $i announced amqp=$addr, configured $want"
    log "node $i (pid ${PID[i]}) ready: amqp=$addr cluster=127.0.0.1:${CLUSTER_PORT[i]}"
}

# Flips a bit inside the first record of node $1's oldest live Raft log
# segment (after the 24-byte segment header and the record's 8-byte frame
# header): damage no torn write explains. Live: not covered by a snapshot,
# which recovery would skip and delete.
damage_raft_log() {
    local segment
    segment="$("$PYTHON" - "$WORK/node$1/data/raft" <<'PY'
import pathlib, sys
raft = pathlib.Path(sys.argv[1])
segments = sorted(raft.glob("*.seg"))
snapshots = sorted(raft.glob("snapshot-*.snap"))
covered = int(snapshots[-1].name[len("snapshot-"):-len(".snap")]) if snapshots else 0
live = [s for i, s in enumerate(segments)
        if i + 1 == len(segments) or int(segments[i + 1].stem) > covered + 1]
with open(live[0], "r+b") as segment:
    segment.seek(40)
    byte = segment.read(1)
    segment.seek(40)
    segment.write(bytes([byte[0] ^ 0x10]))
print(live[0])
PY
)" || die "could not damage node $1's Raft log"
    log "damaged node $1's Raft log: flipped a bit of byte 40 of $segment"
}

# Waits until node $1, started on a damaged log, has rejoined every group
# and caught up in each: as many `caught up` lines as `rejoining` ones.
wait_for_rejoin() {
    local i=$1 until=$(( SECONDS + REJOIN_WAIT_S )) rejoining caught_up
    grep -q 'the Raft log is damaged' "${LOG[i]}" \
        || die "node $i started on a damaged Raft log without noticing"
    while :; do
        rejoining=$(grep -c 'rejoining after damage to the log' "${LOG[i]}" || true)
        caught_up=$(grep -c 'caught up after damage to the log' "${LOG[i]}" || true)
        (( rejoining > 0 && caught_up == rejoining )) && break
        (( SECONDS < until )) \
            || die "node $i: $caught_up of $rejoining groups caught up within ${REJOIN_WAIT_S}s"
        check_deadline "waiting for node $i to rejoin"
        sleep 0.05
    done
    echo "$rejoining"
}

# The leader of group $GROUP in node $1's current view: its newest
# `group leader known` or `group has no leader` line; "none" if it knows none.
leader_seen_by() {
    local line
    line="$(grep -E "group leader known group=$GROUP leader=[0-9]+\$|group has no leader group=$GROUP\$" \
        "${LOG[$1]}" 2>/dev/null | tail -n 1 || true)"
    if [[ "$line" =~ leader=([0-9]+)$ ]]; then
        echo "${BASH_REMATCH[1]}"
    else
        echo none
    fi
}

# Prints the leader of group $GROUP if every live node names the same live
# node; fails (status 1) otherwise.
agreed_leader() {
    local i view agreed=""
    for (( i = 1; i <= NODES; i++ )); do
        [[ -n "${PID[i]}" ]] || continue
        view="$(leader_seen_by "$i")"
        [[ "$view" != none ]] || return 1
        if [[ -z "$agreed" ]]; then
            agreed="$view"
        elif [[ "$view" != "$agreed" ]]; then
            return 1
        fi
    done
    [[ -n "$agreed" && -n "${PID[agreed]:-}" ]] || return 1
    echo "$agreed"
}

# Waits up to $1 seconds for the live nodes to agree on a leader other than
# node $2 (0: any); prints it.
wait_for_leader() {
    local limit=$1 not=$2 leader until=$(( SECONDS + $1 ))
    while :; do
        if leader="$(agreed_leader)" && [[ "$leader" != "$not" ]]; then
            echo "$leader"
            return 0
        fi
        check_nodes_alive "waiting for a leader of group $GROUP"
        check_deadline "waiting for a leader of group $GROUP"
        if (( SECONDS >= until )); then
            local views="" i
            for (( i = 1; i <= NODES; i++ )); do
                [[ -n "${PID[i]}" ]] && views+=" node $i: $(leader_seen_by "$i");"
            done
            die "the live nodes did not agree on a leader of group $GROUP within ${limit}s" \
                "(views:$views)"
        fi
        sleep 0.05
    done
}

accepted_count() { wc -l <"$WORK/accepted.log" 2>/dev/null || echo 0; }
client_running() { [[ -n "$CLIENT_PID" ]] && kill -0 "$CLIENT_PID" 2>/dev/null; }

# What a node is to the client, for the kill records.
role_of() {
    case "$1" in
        "$PRODUCER_NODE") echo "the producer's node" ;;
        "$CONSUMER_NODE") echo "the consumer's node" ;;
        *) echo "no client on it" ;;
    esac
}

# Every start, restarts included, runs this copy: a build running elsewhere
# meanwhile cannot swap the binary under the test.
cp "$BINARY" "$WORK/sluice"
log "work directory $WORK; $MESSAGES messages at ${RATE}/s; seed $SEED; binary $BINARY" \
    "(copied to $WORK/sluice)"
BINARY="$WORK/sluice"
for (( i = 1; i <= NODES; i++ )); do
    start_node "$i"
done

: >"$WORK/kills.log"
: >"$WORK/accepted.log"
CLIENT_LIMIT=$(( DEADLINE - SECONDS - 15 ))
(( CLIENT_LIMIT > 30 )) || die "CLUSTER_KILL_TIME_LIMIT_S=${TIME_LIMIT_S}s leaves the client too little time"
"$PYTHON" "$CLIENT" run "amqp://127.0.0.1:${AMQP_PORT[PRODUCER_NODE]}" \
    "amqp://127.0.0.1:${AMQP_PORT[CONSUMER_NODE]}" "$QUEUE" "$MESSAGES" "$RATE" \
    "$WORK" "$CLIENT_LIMIT" > >(tee "$WORK/client.out") 2>&1 &
CLIENT_PID=$!

# The queue's group, from the declaring node's log.
GROUP=""
until=$(( SECONDS + GROUP_WAIT_S ))
while [[ -z "$GROUP" ]]; do
    GROUP="$(cat "${LOG[@]}" | grep -o -m1 "declaring a queue queue=\"$QUEUE\" group=[0-9]*" \
        | sed 's/.*group=//' || true)"
    [[ -n "$GROUP" ]] && break
    client_running || die "the client ended before the queue was declared"
    check_nodes_alive "waiting for the queue to be declared"
    check_deadline "waiting for the queue to be declared"
    (( SECONDS < until )) || die "no node logged the declaration of $QUEUE within ${GROUP_WAIT_S}s"
    sleep 0.05
done
log "queue $QUEUE lives in group $GROUP"

STEP=$(( MESSAGES * 15 / 100 ))   # acceptances between kills
NEXT_KILL_AT=$STEP
KILLS=0
KILLED_CLIENT_NODE=0
KILLED_OTHER_NODE=0
declare -a KILLED_AS_LEADER
for (( i = 1; i <= NODES; i++ )); do KILLED_AS_LEADER[i]=0; done
# Whether every node has been killed as the leader once.
every_node_killed() {
    local i
    for (( i = 1; i <= NODES; i++ )); do
        (( KILLED_AS_LEADER[i] > 0 )) || return 1
    done
}
while (( KILLS < KILLS_MAX )); do
    if (( KILLS >= KILLS_MIN )) && every_node_killed; then
        break
    fi
    # Wait for the producer to make progress since the last restart.
    while (( $(accepted_count) < NEXT_KILL_AT )); do
        if ! client_running; then
            (( KILLS >= KILLS_MIN )) && break 2
            die "the client ended after $(accepted_count) acceptances, before kill $(( KILLS + 1 ))" \
                "of $KILLS_MIN: send more messages (CLUSTER_KILL_MESSAGES) or more slowly"
        fi
        check_nodes_alive "waiting to kill"
        check_deadline "waiting for $NEXT_KILL_AT acceptances before kill $(( KILLS + 1 ))"
        sleep 0.05
    done
    if (( KILLS >= KILLS_MIN && $(accepted_count) > MESSAGES * 80 / 100 )); then
        log "too few messages left for another kill"
        break
    fi
    LEADER="$(wait_for_leader "$LEADER_WAIT_S" 0)"
    KILLS=$(( KILLS + 1 ))
    KILLED_AS_LEADER[LEADER]=$(( KILLED_AS_LEADER[LEADER] + 1 ))
    ROLE="$(role_of "$LEADER")"
    if [[ "$LEADER" == "$PRODUCER_NODE" || "$LEADER" == "$CONSUMER_NODE" ]]; then
        KILLED_CLIENT_NODE=$(( KILLED_CLIENT_NODE + 1 ))
    else
        KILLED_OTHER_NODE=$(( KILLED_OTHER_NODE + 1 ))
    fi
    VICTIM_PID="${PID[LEADER]}"
    kill -KILL "$VICTIM_PID"
    KILLED_AT="$(now)"
    wait "$VICTIM_PID" 2>/dev/null || true
    PID[LEADER]=""
    echo "$KILLS $LEADER $KILLED_AT leader, $ROLE" >>"$WORK/kills.log"
    ACCEPTED_AT_KILL=$(accepted_count)
    log "kill $KILLS: kill -9 node $LEADER (pid $VICTIM_PID), leader of group $GROUP, $ROLE," \
        "after $ACCEPTED_AT_KILL acceptances"

    NEW_LEADER="$(wait_for_leader "$LEADER_WAIT_S" "$LEADER")"
    log "kill $KILLS: the survivors agree: node $NEW_LEADER leads group $GROUP" \
        "($(awk -v a="$(now)" -v b="$KILLED_AT" 'BEGIN { printf "%.2f", a - b }')s after the kill)"
    if [[ -n "${PID[PRODUCER_NODE]}" ]]; then
        # Event: the producer is taken again (bounded; a stall is reported).
        ACCEPTED_AT_ELECTION=$(accepted_count)
        until=$(( SECONDS + PROGRESS_WAIT_S ))
        while (( $(accepted_count) <= ACCEPTED_AT_ELECTION )) && client_running; do
            if (( SECONDS >= until )); then
                log "kill $KILLS: WARNING: no acceptance within ${PROGRESS_WAIT_S}s of the new leader"
                break
            fi
            check_nodes_alive "waiting for the producer to make progress"
            check_deadline "waiting for the producer to make progress"
            sleep 0.05
        done
    fi
    # The node stays down at least DOWN_MIN_S in all.
    REMAINING="$(awk -v a="$(now)" -v b="$KILLED_AT" -v d="$DOWN_MIN_S" \
        'BEGIN { r = d - (a - b); if (r < 0) r = 0; printf "%.3f", r }')"
    sleep "$REMAINING"
    if (( DAMAGE == 1 && KILLS == 1 )); then
        damage_raft_log "$LEADER"
        DAMAGED_AT="$(now)"
        start_node "$LEADER"
        GROUPS_REJOINED="$(wait_for_rejoin "$LEADER")"
        DAMAGE_SUMMARY="node $LEADER rejoined $GROUPS_REJOINED groups and caught up"
        DAMAGE_SUMMARY+=" $(awk -v a="$(now)" -v b="$DAMAGED_AT" 'BEGIN { printf "%.2f", a - b }')s"
        DAMAGE_SUMMARY+=" after its restart on a damaged log"
        log "kill $KILLS: $DAMAGE_SUMMARY"
    else
        start_node "$LEADER"
    fi
    echo "restart $KILLS $LEADER $(now)" >>"$WORK/kills.log"
    REJOINED="$(wait_for_leader "$REJOIN_WAIT_S" 0)"
    log "kill $KILLS: node $LEADER is back and agrees: node $REJOINED leads group $GROUP"
    NEXT_KILL_AT=$(( $(accepted_count) + STEP ))
done
KILL_COUNTS="$KILLED_OTHER_NODE of a leader no client is on, $KILLED_CLIENT_NODE of a leader a client is on"
KILL_COUNTS+="; as leader: node 1 ${KILLED_AS_LEADER[1]}x, node 2 ${KILLED_AS_LEADER[2]}x, node 3 ${KILLED_AS_LEADER[3]}x"
log "$KILLS kills made ($KILL_COUNTS)"

# The client ends by itself (complete, idle or at its time limit).
while client_running; do
    check_nodes_alive "waiting for the client to finish"
    check_deadline "waiting for the client to finish"
    sleep 0.1
done
CLIENT_STATUS=0
wait "$CLIENT_PID" || CLIENT_STATUS=$?
CLIENT_PID=""
check_nodes_alive "the client ran"

# Stop the nodes, then look at what they logged.
for (( i = 1; i <= NODES; i++ )); do
    kill -TERM "${PID[i]}" 2>/dev/null || true
done
until=$(( SECONDS + STOP_WAIT_S ))
for (( i = 1; i <= NODES; i++ )); do
    while kill -0 "${PID[i]}" 2>/dev/null && (( SECONDS < until )); do
        sleep 0.05
    done
    if kill -0 "${PID[i]}" 2>/dev/null; then
        log "WARNING: node $i did not stop within ${STOP_WAIT_S}s of SIGTERM; killing it"
        kill -KILL "${PID[i]}" 2>/dev/null || true
    fi
    NODE_STATUS=0
    wait "${PID[i]}" 2>/dev/null || NODE_STATUS=$?
    (( NODE_STATUS == 0 )) || log "WARNING: node $i exited with status $NODE_STATUS on SIGTERM"
    PID[i]=""
done

REPORT_STATUS=0
REPORTED=1
"$PYTHON" "$CLIENT" report "$WORK" || REPORT_STATUS=$?
echo "  kills:       $KILLS ($KILL_COUNTS)"
echo "  damage:      ${DAMAGE_SUMMARY:-none (CLUSTER_KILL_DAMAGE=0)}"
echo "  test phase:  $(( SECONDS - STARTED_AT ))s; seed $SEED"
for (( i = 1; i <= NODES; i++ )); do
    WARNINGS=$(cat "$WORK/node$i"/sluice.*.log | grep -c -E '^\S+ +(WARN|ERROR) ' || true)
    PANICS=$(cat "$WORK/node$i"/sluice.*.log | grep -c 'panicked' || true)
    echo "  node $i:      ${STARTS[i]} starts, $WARNINGS WARN/ERROR lines, $PANICS panics"
    if (( PANICS > 0 )); then
        REPORT_STATUS=1
    fi
done
if (( REPORT_STATUS != 0 || CLIENT_STATUS != 0 )); then
    die "see the summary above; logs in $WORK"
fi
log "passed"
