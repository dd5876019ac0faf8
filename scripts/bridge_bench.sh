#!/usr/bin/env bash
# Bridge benchmark (issue 12): messages forwarded per CPU-second of the edge
# broker, midge -> mosquitto against mosquitto -> mosquitto, QoS 0 and 1 (four
# publishers on the edge, one subscriber on the remote, same load generator);
# then the drain rate of a 100,000-message QoS 1 backlog queued on the edge while
# the remote was down (first to last arrival at a subscriber on the remote), and
# meanwhile the round trip of a local pair on the edge (one publisher, one
# subscriber, QoS 0 at a fixed rate, topics the bridge does not forward): p50
# and p99 while the backlog drains, beside the same pair with the remote down
# (nothing draining). A loop that let the drain starve local clients shows here.
#
#   scripts/bridge_bench.sh        (DURATION seconds per run, default 5; BACKLOG, default 100000;
#                                   RTT_RATE local pair messages/s, default 200; INFLIGHT, the
#                                   edges' max_inflight_messages, default 100; EDGES, default
#                                   "midge mosquitto"; DRAIN_ONLY=1 skips the CPU-second runs,
#                                   CPU_ONLY=1 the drain; OLD_MIDGE=/path/to/midge adds that
#                                   binary as a third edge in the CPU-second runs, for a
#                                   before/after figure in the same run)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5}"
BACKLOG="${BACKLOG:-100000}"
RTT_RATE="${RTT_RATE:-200}"
INFLIGHT="${INFLIGHT:-100}"
EDGES="${EDGES:-midge mosquitto}"
DRAIN_ONLY="${DRAIN_ONLY:-0}"
CPU_ONLY="${CPU_ONLY:-0}"
OLD_MIDGE="${OLD_MIDGE:-}"
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
cargo build --release --bins -q
work="$(mktemp -d)"
chmod 777 "$work"
trap 'kill $(cat "$work/pids" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
# free_port, wait_port
source scripts/lib.sh
# start NAME BINARY PORT CONFIG-LINES -> pid in $pid
start() {
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser root\n%b\n' "$3" "$4" >"$work/$1.conf"
    if [ "$2" = midge ] || [ "$2" = midge-old ]; then
        sed -i '/^user root$/d' "$work/$1.conf"
        bin=target/release/midge
        if [ "$2" = midge-old ]; then bin="$OLD_MIDGE"; fi
        "$bin" -c "$work/$1.conf" >"$work/$1.log" 2>&1 &
    else
        "$MOSQUITTO" -c "$work/$1.conf" >"$work/$1.log" 2>&1 &
    fi
    pid=$!
    echo "$pid" >>"$work/pids"
    wait_port "$3"
}
bridge_lines() { # remote-port client-id
    printf 'connection up\naddress 127.0.0.1:%s\nremote_clientid %s\nrestart_timeout 1\ntopic bench/in/# out 1\nmax_queued_messages 0\nmax_inflight_messages %s' "$1" "$2" "$INFLIGHT"
}
wait_log() { for _ in $(seq 1 200); do grep -q "$2" "$work/$1.log" && return 0; sleep 0.05; done; echo "no '$2' in $1.log" >&2; cat "$work/$1.log" >&2; exit 1; }

if [ "$DRAIN_ONLY" != 1 ]; then
echo "== forwarded per edge CPU-second ($DURATION s, 4 publishers -> edge -> remote -> 1 subscriber, 64-byte payloads)"
rport="$(free_port)"
start remote mosquitto "$rport" "max_queued_messages 0"
remote_pid=$pid
cpu_edges="midge mosquitto"
if [ -n "$OLD_MIDGE" ]; then cpu_edges="midge-old midge mosquitto"; fi
for edge in $cpu_edges; do
    eport="$(free_port)"
    start "edge-$edge" "$edge" "$eport" "$(bridge_lines "$rport" "edge-$edge")"
    epid=$pid
    if [ "$edge" = mosquitto ]; then wait_log remote "edge-mosquitto"; else wait_log "edge-$edge" "Bridge up: connected"; fi
    for q in 0 1; do
        printf '%-10s -> mosquitto  QoS %s: ' "$edge" "$q"
        target/release/midge-bench -p "$eport" --sub-port "$rport" -s fanin -c 4 -q "$q" -d "$DURATION" --broker-pid "$epid" | sed -n '1p;3p' | tr '\n' ' '
        echo
    done
    kill "$epid"; wait "$epid" 2>/dev/null || true
done
kill "$remote_pid"; wait "$remote_pid" 2>/dev/null || true
fi
if [ "$CPU_ONLY" = 1 ]; then exit 0; fi

echo "== drain of a $BACKLOG-message QoS 1 backlog after an outage, and a local pair's round trip meanwhile"
# rtt PORT SECONDS -> "p50_us p99_us p999_us" of a local QoS 0 pair at RTT_RATE msg/s
rtt() {
    target/release/midge-bench -p "$1" -s pairs -c 1 -q 0 -r "$RTT_RATE" -d "$2" --json |
        python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["p50_us"], r["p99_us"], r["p999_us"])'
}
for edge in $EDGES; do
    rport="$(free_port)"; eport="$(free_port)"
    # The remote's counting session exists before the outage (a persistent
    # session, saved by the remote at SIGTERM), so nothing the bridge sends
    # before the counter connects is lost.
    rconf="max_queued_messages 0\npersistence true\npersistence_location $work/drain-remote-$edge/"
    mkdir -p "$work/drain-remote-$edge"
    start "drain-remote-$edge" mosquitto "$rport" "$rconf"
    mosquitto_sub -p "$rport" -c -i "drain-count-$edge" -t 'bench/#' -q 1 -E
    kill "$pid"; wait "$pid" 2>/dev/null || true
    start "drain-$edge" "$edge" "$eport" "$(bridge_lines "$rport" "drain-$edge")"
    epid=$pid
    echo "$edge edge, max_inflight_messages $INFLIGHT:"
    # The backlog: QoS 1 messages acknowledged by the edge (a local subscriber
    # there too) while the remote is down.
    target/release/midge-bench -p "$eport" -s fanin -c 4 -q 1 -n $((BACKLOG / 4)) >/dev/null
    read -r idle50 idle99 idle999 <<<"$(rtt "$eport" 3)"
    # The local pair runs from 1 s before the remote returns (so the moment
    # the bridge reconnects and its session floods the window is covered)
    # until well into the drain.
    rtt "$eport" 9 >"$work/rtt-$edge" &
    rtt_pid=$!
    sleep 1
    start "drain-remote-$edge" mosquitto "$rport" "$rconf"
    t0=$(date +%s.%N)
    mosquitto_sub -p "$rport" -c -i "drain-count-$edge" -t 'bench/#' -q 1 -C "$BACKLOG" -F '%U' -W 120 >"$work/drain-$edge.ts"
    wait "$rtt_pid"
    read -r drain50 drain99 drain999 <"$work/rtt-$edge"
    first=$(head -1 "$work/drain-$edge.ts"); last=$(tail -1 "$work/drain-$edge.ts")
    python3 -c "import sys; f,l,n,t0=float('$first'),float('$last'),$BACKLOG,float('$t0'); print('%-10s -> mosquitto  %d messages in %.2f s: %.0f msg/s (remote up to last: %.2f s)' % ('$edge', n, l-f, n/(l-f), l-t0))"
    printf '%-10s local pair round trip: while draining p50 %s us, p99 %s us, p99.9 %s us; nothing draining p50 %s us, p99 %s us, p99.9 %s us\n' \
        "$edge" "$drain50" "$drain99" "$drain999" "$idle50" "$idle99" "$idle999"
    kill "$epid"; wait "$epid" 2>/dev/null || true
done
