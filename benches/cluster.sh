#!/usr/bin/env bash
# Cluster mode side by side, in one run on one machine, rounds alternating every setup:
#   a. one pairchat process, no Redis (the baseline);
#   b. two pairchat nodes on one Redis, same-node pairs: pair i on node 1 when i is even, on
#      node 2 when odd, both members on that node (loadgen --url node1,node2);
#   c. two pairchat nodes on one Redis, cross-node pairs: the creator on node 1, the joiner on
#      node 2 (loadgen --url node1 --join-url node2);
#   d. the Node peer (socket.io + @socket.io/redis-adapter), two processes on one Redis,
#      cross-node pairs as in c (each member connects straight to its process: the load
#      generator speaks WebSocket only, so no sticky balancer is needed);
# at full speed (PAIRS pairs, IN_FLIGHT messages in flight per client), then paced at RATE
# messages/s in all for c, d and b, and at PAIRCHAT_RATE for c alone. Each run starts its
# servers (and its Redis) fresh and stops them after it. Servers and Redis are pinned to
# SERVER_CPUS, the load generator to LOAD_CPUS, as benches/side_by_side.sh pins: on a 2-core
# machine the two nodes and Redis share one core.
#
#   benches/cluster.sh <pairchat binary>
#
# e.g. benches/cluster.sh target/x86_64-unknown-linux-gnu/release/pairchat
# Environment (defaults): ROUNDS (3), D (8s: the measured window of each run), WARMUP (2s),
# PAIRS (1000), IN_FLIGHT (8), RATE (2000: what the Node peer keeps up with on one shared
# core), PAIRCHAT_RATE (10000; empty skips that run), NODE_PEER (the peer's directory,
# ../shared/peers/node-cluster-chat; it is copied and installed with `npm ci` unless it has its
# node_modules; empty skips the Node peer), LG (the load generator; $CARGO_TARGET_DIR or
# target, then */release/examples/loadgen), SERVER_CPUS (1), LOAD_CPUS (0), OUT (where every server's log, the load
# generator's stderr and results.jsonl, one JSON line per run, are kept; a new directory under
# TMPDIR by default), PAIRCHAT_FLAGS (more flags for every pairchat process, e.g.
# "--recovery-window 0"; besides --message-rate 0 --join-failures 0, which every run has). The
# report goes to stdout, progress to stderr.
# Needs redis-server, redis-cli, curl, jq, taskset; node and npm for the peer.
set -u
# Paths given are taken from where the script is called; the script runs from the repository.
[ $# -eq 1 ] || { echo "usage: benches/cluster.sh <pairchat binary>" >&2; exit 2; }
BIN=$(realpath -e "$1") && [ -x "$BIN" ] || { echo "not an executable: $1" >&2; exit 2; }
for var in LG OUT NODE_PEER; do
    [ -n "${!var:-}" ] && printf -v "$var" %s "$(realpath -m "${!var}")"
done
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
D=${D:-8s}
WARMUP=${WARMUP:-2s}
PAIRS=${PAIRS:-1000}
IN_FLIGHT=${IN_FLIGHT:-8}
RATE=${RATE:-2000}
PAIRCHAT_RATE=${PAIRCHAT_RATE-10000}
NODE_PEER=${NODE_PEER-../shared/peers/node-cluster-chat}
PAIRCHAT_FLAGS=${PAIRCHAT_FLAGS:-}
SERVER_CPUS=${SERVER_CPUS:-1}
LOAD_CPUS=${LOAD_CPUS:-0}
LG=${LG:-$(ls "${CARGO_TARGET_DIR:-target}"/*/release/examples/loadgen 2>/dev/null | head -1)}

for tool in redis-server redis-cli curl jq taskset; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
[ -x "$LG" ] || { echo "build the load generator first: cargo build --release --example loadgen" >&2; exit 2; }
if "$LG" chat --join-url - 2>&1 | grep -q 'unknown option'; then
    echo "$LG has no --join-url: rebuild it (cargo build --release --example loadgen)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pairchat-cluster.XXXXXX")
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
PIDS=()

# Stops what this script started, by pid.
stop_servers() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    PIDS=()
}
cleanup() {
    stop_servers
    rm -rf "$WORK/peer"
    [ "$OUT" = "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets PORT to a port nothing listens on, not handed out before, below the ephemeral range
# the load generator's sockets use.
USED=" "
free_port() {
    while :; do
        PORT=$((20000 + RANDOM % 12000))
        [[ $USED == *" $PORT "* ]] && continue
        (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && continue
        USED+="$PORT "
        return
    done
}

# Waits until GET /health on a port answers with a body containing $2.
wait_health() {
    local _
    for _ in $(seq 100); do
        [[ $(curl -s --max-time 1 "http://127.0.0.1:$1/health") == *"$2"* ]] && return 0
        sleep 0.1
    done
    echo "no healthy server on port $1" >&2
    return 1
}

# Each start_* sets PORT and PID (a global: the pid must be this shell's child).
start_redis() {
    free_port
    taskset -c "$SERVER_CPUS" redis-server --port "$PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --maxmemory-policy noeviction >"$OUT/$1.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    local _
    for _ in $(seq 100); do
        [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    echo "redis-server did not start (see $OUT/$1.log)" >&2
    return 1
}
start_pairchat() {
    local log=$1
    shift
    free_port
    # shellcheck disable=SC2086 # PAIRCHAT_FLAGS is a list of words
    taskset -c "$SERVER_CPUS" "$BIN" --host 127.0.0.1 --port "$PORT" --message-rate 0 \
        --join-failures 0 $PAIRCHAT_FLAGS "$@" >"$OUT/$log.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_health "$PORT" "$([ $# -gt 0 ] && echo '"redis":"up"' || echo '"ok"')"
}
start_node_peer() {
    free_port
    (cd "$PEER" && PORT=$PORT REDIS_URL=$2 exec taskset -c "$SERVER_CPUS" node server.cjs) \
        >"$OUT/$1.log" 2>&1 &
    PID=$!
    PIDS+=("$PID")
    wait_health "$PORT" '"ok"'
}

PEER=
if [ -n "$NODE_PEER" ]; then
    if [ -d "$NODE_PEER/node_modules" ]; then
        PEER=$NODE_PEER
    elif [ -f "$NODE_PEER/package-lock.json" ]; then
        cp -r "$NODE_PEER" "$WORK/peer"
        (cd "$WORK/peer" && npm ci --silent >/dev/null 2>&1) || { echo "npm ci failed for the Node peer" >&2; exit 2; }
        PEER=$WORK/peer
    else
        echo "no Node peer at $NODE_PEER (set NODE_PEER, or NODE_PEER= to skip it)" >&2
        exit 2
    fi
fi

# One run: fresh servers, one load generator, servers stopped; its JSON line, tagged, goes to
# results.jsonl.
run_case() {
    local kind=$1 rate=$2 round=$3
    local tag="$kind-$rate-$round" url join pids rport redis=() logs=()
    case $kind in
        single)
            start_pairchat "$tag-pairchat" || { stop_servers; return; }
            url=127.0.0.1:$PORT pids=$PID logs=("$tag-pairchat")
            ;;
        same | cross | node)
            start_redis "$tag-redis" || { stop_servers; return; }
            local rpid=$PID p1 pid1 n
            rport=$PORT
            redis=(--redis-pid "$rpid" --redis "127.0.0.1:$rport")
            for n in 1 2; do
                if [ "$kind" = node ]; then
                    start_node_peer "$tag-node$n" "redis://127.0.0.1:$rport" ||
                        { stop_servers; return; }
                else
                    start_pairchat "$tag-node$n" --redis "redis://127.0.0.1:$rport" ||
                        { stop_servers; return; }
                fi
                logs+=("$tag-node$n")
                [ "$n" = 1 ] && { p1=$PORT pid1=$PID; }
            done
            pids=$pid1,$PID
            if [ "$kind" = same ]; then
                url=127.0.0.1:$p1,127.0.0.1:$PORT join=
            else
                url=127.0.0.1:$p1 join=127.0.0.1:$PORT
            fi
            ;;
    esac
    sleep 0.5
    local args=(chat --url "$url" --server-pid "$pids" "${redis[@]}" --pairs "$PAIRS"
        --in-flight "$IN_FLIGHT" --duration "$D" --warmup "$WARMUP" --sources 4)
    [ -n "${join:-}" ] && args+=(--join-url "$join")
    [ "$rate" != 0 ] && args+=(--rate "$rate")
    local line rpush=null
    line=$(taskset -c "$LOAD_CPUS" "$LG" "${args[@]}" 2>"$OUT/$tag-loadgen.err")
    if [ -n "${rport:-}" ]; then
        # Messages appended to the history (every server here appends each with one RPUSH),
        # once Redis has caught up with what the servers queued.
        local last=-1 _
        for _ in $(seq 50); do
            rpush=$(redis-cli -p "$rport" info commandstats |
                sed -n 's/^cmdstat_rpush:calls=\([0-9]*\),.*/\1/p')
            rpush=${rpush:-0}
            [ "$rpush" = "$last" ] && break
            last=$rpush
            sleep 0.2
        done
    fi
    stop_servers
    local drops=0 l
    for l in "${logs[@]}"; do
        drops=$((drops + $(grep -c 'redis link down' "$OUT/$l.log")))
    done
    if [ -z "$line" ]; then
        echo "  $tag: no result (see $OUT/$tag-loadgen.err)" >&2
        return
    fi
    echo "$line" | jq -c --arg case "$kind" --argjson round "$round" --argjson drops "$drops" \
        --argjson rpush "$rpush" '. + {case: $case, round: $round, link_drops: $drops,
        history_appended: $rpush}' >>"$OUT/results.jsonl"
    echo "$line" | jq -r --arg tag "$tag" '"  \($tag): \(.deliveries_per_s) deliveries/s, "
        + "\(.server_cpu_us_per_message // "?") µs server + \(.redis_cpu_us_per_message // "-") µs "
        + "Redis CPU per message, \(.lost) lost, ack p99 \(.ack_p99_us) µs"' >&2
}

CASES=("single 0" "same 0" "cross 0")
[ -n "$PEER" ] && CASES+=("node 0")
CASES+=("cross $RATE")
[ -n "$PEER" ] && CASES+=("node $RATE")
CASES+=("same $RATE")
[ -n "$PAIRCHAT_RATE" ] && CASES+=("cross $PAIRCHAT_RATE")

echo "cluster benchmark: $ROUNDS rounds of ${#CASES[@]} runs, logs in $OUT" >&2
: >"$OUT/results.jsonl"
for round in $(seq "$ROUNDS"); do
    echo "round $round" >&2
    # The order turns by one each round, so no setup always runs first or last.
    count=${#CASES[@]}
    for i in $(seq 0 $((count - 1))); do
        run_case ${CASES[$(((i + round - 1) % count))]} "$round"
    done
done

# The report.
cores=$(nproc)
cat <<EOF

## Cluster, $(date -u +%Y-%m-%d)

pairchat: $BIN ($("$BIN" --version 2>/dev/null), sha256 $(sha256sum "$BIN" | cut -c1-12)); \
redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')$([ -n "$PEER" ] && echo "; Node peer: node $(node --version), socket.io $(jq -r '.dependencies["socket.io"]' "$PEER/package.json"), @socket.io/redis-adapter $(jq -r '.dependencies["@socket.io/redis-adapter"]' "$PEER/package.json")").
$cores cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')). $ROUNDS rounds, each running every setup
once (the order turning by one each round), each run with fresh servers and a fresh Redis,
$PAIRS pairs, ${WARMUP} warm-up then a ${D} window${PAIRCHAT_FLAGS:+, pairchat with $PAIRCHAT_FLAGS}. Servers and Redis pinned to CPU $SERVER_CPUS, the
load generator to CPU $LOAD_CPUS: in b, c and d the two server processes and Redis share that
core, so deliveries/s is what the whole cluster does on one core, not two nodes' worth of
cores; CPU per message (server processes summed, Redis apart) is the figure that compares.
Means over rounds; per-round values where shown. CPU time is read in 10 ms ticks. Redis
commands per message: every command Redis ran in the window (from INFO commandstats: a script
counts as its EVALSHA and as each command it runs), scripts in brackets. History appended: the
RPUSHes Redis had run once it caught up after the run, per message acknowledged with success.
Link drops: times a pairchat node gave its Redis link up ("redis link down" in its log).
EOF

jq -rs --arg rate "$RATE" --arg prate "$PAIRCHAT_RATE" --arg inflight "$IN_FLIGHT" '
def mean(f): [.[] | f | select(. != null)] | if length == 0 then null else add / length end;
def sep: if length > 3 then (.[:-3] | sep) + " " + .[-3:] else . end;
def n0: if . == null then "–" else (round | tostring | sep) end;
def n1: if . == null then "–" else (. * 10 | round / 10 | tostring) end;
def n2: if . == null then "–" else (. * 100 | round / 100 | tostring) end;
def ms: if . == null then "–" elif . >= 10000 then (. / 1000 | round | tostring) + " ms"
        elif . >= 1000 then (. / 100 | round / 10 | tostring) + " ms" else (round | tostring) + " µs" end;
def title: {single: "a. pairchat, 1 process, no Redis",
             same: "b. pairchat, 2 nodes + Redis, same-node pairs",
             cross: "c. pairchat, 2 nodes + Redis, cross-node pairs",
             node: "d. Node peer, 2 processes + Redis, cross-node pairs"}[.];
def total: if .server_cpu_us_per_message == null then null
           else .server_cpu_us_per_message + (.redis_cpu_us_per_message // 0) end;
def exact: "\(map(.lost) | add) / \(map(.duplicates) | add)"
           + (if (map(.reordered) | add) > 0 then ", \(map(.reordered) | add) reordered" else "" end)
           + (if (map(.ack_errors) | add) > 0 then ", \(map(.ack_errors) | add) ack errors" else "" end);
def redis: if .[0].redis_commands_per_message == null then "–"
           else "\(mean(.redis_commands_per_message) | n2) (\(mean(.redis_scripts_per_message) | n2))" end;
def history: if .[0].history_appended == null then "–"
             else (map(.history_appended) | add) / (map(.acked - .ack_errors) | add) * 1000
                  | round / 10 | "\(.) %" end;
def drops: if .[0].case == "same" or .[0].case == "cross" then (map(.link_drops) | add | tostring) else "–" end;
def rows(cases; r):
  cases[] as $c | [.[] | select(.case == $c and .rate == r)] | select(length > 0);
. as $all
| "\n### Full speed: \($inflight) messages in flight per client\n",
  "| | deliveries/s | server CPU per message | Redis CPU per message | server + Redis | ack p50 / p99 | lost / duplicated | Redis commands per message (scripts) | history appended | link drops | server CPU per message, by round |",
  "|---|---|---|---|---|---|---|---|---|---|---|",
  ($all | rows(["single", "same", "cross", "node"]; 0)
   | "| \(.[0].case | title) | \(mean(.deliveries_per_s) | n0) | \(mean(.server_cpu_us_per_message) | n2) µs | \(mean(.redis_cpu_us_per_message) | n2)\(if .[0].redis_cpu_us_per_message == null then "" else " µs" end) | \(mean(total) | n2) µs | \(mean(.ack_p50_us) | ms) / \(mean(.ack_p99_us) | ms) | \(exact) | \(redis) | \(history) | \(drops) | \(map(.server_cpu_us_per_message | n2) | join(" / ")) |"),
  "\n### Paced\n",
  "| | messages/s asked / done | ack p50 / p99 | delivery p50 / p99 | server CPU per message | Redis CPU per message | lost / duplicated | Redis commands per message (scripts) | history appended | link drops |",
  "|---|---|---|---|---|---|---|---|---|---|",
  ($all | ([$rate, $prate] | map(select(. != "") | tonumber) | unique)[] as $r
   | rows(["cross", "node", "same"]; $r)
   | "| \(.[0].case | title) | \($r | n0) / \(mean(.acks_per_s) | n0) | \(mean(.ack_p50_us) | ms) / \(mean(.ack_p99_us) | ms) | \(mean(.delivery_p50_us) | ms) / \(mean(.delivery_p99_us) | ms) | \(mean(.server_cpu_us_per_message) | n1) µs | \(mean(.redis_cpu_us_per_message) | n1)\(if .[0].redis_cpu_us_per_message == null then "" else " µs" end) | \(exact) | \(redis) | \(history) | \(drops) |"),
  "\nRedis commands per message, by command (means over rounds; a script counts once as EVALSHA, and each command it runs counts too):\n",
  ($all | ([0] + ([$rate, $prate] | map(select(. != "") | tonumber) | unique))[] as $r
   | rows(["same", "cross", "node"]; $r) | select(.[0].redis_calls_per_message != null)
   | length as $runs
   | "- \(.[0].case | title), \(if $r == 0 then "full speed" else "\($r | n0) messages/s" end): \(
       [.[] | .redis_calls_per_message | to_entries[]] | group_by(.key)
       | map({k: .[0].key, v: (map(.value) | add / $runs)}) | map(select(.v >= 0.005))
       | sort_by(-.v) | map("\(.k) \(.v | n2)") | join(", "))")
' "$OUT/results.jsonl"
