#!/usr/bin/env bash
# Runs one load-generator mode against one server, the server pinned to core 1 and the load
# generator to core 0, and prints the load generator's JSON line tagged with the server's name.
# The server is started fresh for the run and stopped after it.
#
#   MODE=connect|chat|paced|idle benches/side_by_side.sh <name> <port> <server command...>
#
# e.g. MODE=chat benches/side_by_side.sh pairchat 3701 \
#        target/x86_64-unknown-linux-gnu/release/pairchat --port 3701 --message-rate 0 --join-failures 0
# Environment: LG (loadgen binary), N (sessions, default 10000), D (duration, default 10s),
# T (the clients' transport: websocket, the default, polling, or upgrade: polling, then the
# upgrade to WebSocket, as socket.io-client connects by default), JT (chat: the joining member's
# transport, for mixed pairs), SERVER_CPU (a share of its core the server may use, e.g. 0.5:
# where the load generator's core is the bottleneck, a quota makes the server the bottleneck,
# so sessions/s measures the server; needs root and the cgroup cpu controller).
set -u
cd "$(dirname "$0")/.."
LG=${LG:-$(ls target/*/release/examples/loadgen 2>/dev/null | head -1)}
[ -x "$LG" ] || { echo "build the load generator first: cargo build --release --example loadgen" >&2; exit 1; }
name=$1
port=$2
shift 2
cgroup=
pid=
# On every exit, interrupted too: the server stops, then its cgroup goes.
cleanup() {
    [ -z "$pid" ] || { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
    [ -z "$cgroup" ] || rmdir "$cgroup" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -n "${SERVER_CPU:-}" ]; then
    # A 10 ms period: the quota throttles in small slices, not in long stalls.
    quota=$(awk -v s="$SERVER_CPU" 'BEGIN { if (s + 0 >= 0.1 && s + 0 <= 1) printf "%d", s * 10000 }')
    [ -n "$quota" ] || { echo "SERVER_CPU is a share of one core, from 0.1 to 1" >&2; exit 1; }
    if [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        cgroup=/sys/fs/cgroup/cpu/side-by-side-$$
        mkdir "$cgroup" && echo 10000 >"$cgroup/cpu.cfs_period_us" && echo "$quota" >"$cgroup/cpu.cfs_quota_us"
    elif grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
        cgroup=/sys/fs/cgroup/side-by-side-$$
        mkdir "$cgroup" && echo "$quota 10000" >"$cgroup/cpu.max"
    else
        false
    fi || { echo "SERVER_CPU needs root and a cgroup cpu controller (v1 at /sys/fs/cgroup/cpu, or v2 with cpu enabled)" >&2; exit 1; }
fi
# The server joins the cgroup before it starts (with every thread it will have).
CGROUP=$cgroup taskset -c 1 sh -c '[ -z "$CGROUP" ] || echo $$ >"$CGROUP/cgroup.procs" || exit 1; exec "$@"' sh "$@" \
    >"/tmp/side-by-side-$name.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
sleep 0.5
common=(--url "127.0.0.1:$port" --server-pid "$pid" --sources 4 --transport "${T:-websocket}")
[ -n "${JT:-}" ] && common+=(--join-transport "$JT")
case ${MODE:?set MODE} in
    connect) taskset -c 0 "$LG" connect "${common[@]}" --sessions "${N:-10000}" --concurrency 500 ;;
    chat) taskset -c 0 "$LG" chat "${common[@]}" --pairs 1000 --in-flight 8 --duration "${D:-10s}" ;;
    paced) taskset -c 0 "$LG" chat "${common[@]}" --pairs 1000 --rate 10000 --duration "${D:-10s}" ;;
    idle) taskset -c 0 "$LG" idle "${common[@]}" --sessions "${N:-10000}" --concurrency 500 --duration 5s ;;
    *) echo "unknown MODE $MODE" >&2 ;;
esac 2>/dev/null | sed "s/^{/{\"server\":\"$name\",/"
exit 0
