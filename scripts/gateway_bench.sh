#!/usr/bin/env bash
# Gateway benchmark (issue 15): memory and flash wear of an edge broker under a
# small device's load, midge beside mosquitto, same load generator.
#
# The load: CLIENTS publishers (default 200) at RATE messages per second each
# (default 50), QoS 1, 64-byte payloads on their own topics; one local
# subscriber on a persistent session (so every message is persisted); RETAINED
# retained messages (default 1000) loaded first; persistence on; one bridge
# forwarding everything (QoS 1) to a mosquitto on loopback (the "cloud").
#
# Reported per edge broker: RSS at the start of the run, steady (median of the
# samples in the second half), peak (VmHWM); bytes written to storage during the
# run (/proc/PID/io write_bytes: the persistence log for midge, nothing for
# mosquitto until its autosave) and per delivered QoS 1 message; mosquitto's
# snapshot size (what each autosave rewrites, every autosave_interval, default
# 1800 s), set against the messages of one such interval at this rate.
#
# With CAP (e.g. CAP=16M) only midge runs, inside a memory cgroup with that hard
# limit (cgroup v2 memory.max or v1 memory.limit_in_bytes; else RLIMIT_AS by
# prlimit), and the run says whether it was killed and what it refused.
# STALL=1 adds a persistent subscriber that subscribes, then stops reading (a
# consumer that hangs), so the broker's memory is under pressure; EXTRA is
# config lines added to midge's (e.g. EXTRA='max_queued_messages 0\nmemory_limit
# 8388608': no queue bound, a heap bound instead).
#
#   scripts/gateway_bench.sh             (DURATION seconds, default 60)
#   CAP=16M STALL=1 scripts/gateway_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-60}"
CLIENTS="${CLIENTS:-200}"
RATE="${RATE:-50}"
RETAINED="${RETAINED:-1000}"
CAP="${CAP:-}"
STALL="${STALL:-0}"
EXTRA="${EXTRA:-}"
MQTT="${MQTT:-5}"
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
cargo build --release --bins -q
work="$(mktemp -d)"
chmod 777 "$work"
cgroup=""
cleanup() {
    kill $(cat "$work/pids" 2>/dev/null) 2>/dev/null || true
    sleep 0.2
    if [ -n "$cgroup" ] && [ -d "$cgroup" ]; then rmdir "$cgroup" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# free_port, wait_port
source scripts/lib.sh
wait_log() { for _ in $(seq 1 200); do grep -q "$2" "$work/$1.log" && return 0; sleep 0.05; done; echo "no '$2' in $1.log" >&2; cat "$work/$1.log" >&2; exit 1; }
kb() { awk -v f="$2" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
wbytes() { awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io" 2>/dev/null || echo 0; }
bytes() { # "16M" -> bytes
    python3 -c "import sys; s='$1'.upper(); m={'K':1<<10,'M':1<<20,'G':1<<30}; print(int(float(s[:-1])*m[s[-1]]) if s[-1] in m else int(s))"
}

# A memory cgroup for the capped run: v2 if the unified hierarchy has the
# memory controller, else v1. Prints the directory, or nothing.
make_cgroup() {
    local limit=$1 d
    if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        d=/sys/fs/cgroup/midge-gateway-bench-$$
        mkdir "$d" 2>/dev/null && echo "$limit" >"$d/memory.max" && echo 0 >"$d/memory.swap.max" 2>/dev/null
    elif [ -w /sys/fs/cgroup/memory ]; then
        d=/sys/fs/cgroup/memory/midge-gateway-bench-$$
        mkdir "$d" 2>/dev/null && echo "$limit" >"$d/memory.limit_in_bytes" &&
            { echo "$limit" >"$d/memory.memsw.limit_in_bytes" 2>/dev/null || true; }
    fi
    if [ -n "${d:-}" ] && [ -d "$d" ]; then echo "$d"; fi
}

rport="$(free_port)"
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\n' "$rport" >"$work/remote.conf"
"$MOSQUITTO" -c "$work/remote.conf" >"$work/remote.log" 2>&1 &
echo $! >>"$work/pids"
wait_port "$rport"

edges="midge mosquitto"
if [ -n "$CAP" ]; then edges=midge; fi
echo "== gateway load: $CLIENTS publishers x $RATE msg/s, QoS 1, 64-byte payloads, $RETAINED retained, persistence on, one bridge (QoS 1 to mosquitto), ${DURATION} s, MQTT $MQTT${CAP:+, memory cap $CAP}"
[ "$STALL" = 1 ] && echo "   plus one persistent subscriber that stops reading"
for edge in $edges; do
    eport="$(free_port)"
    dir="$work/$edge-data"
    mkdir -p "$dir"
    chmod 777 "$dir"
    {
        printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$eport"
        printf 'persistence true\npersistence_location %s/\nautosave_interval 1800\n' "$dir"
        [ "$edge" = mosquitto ] && printf 'user root\n'
        [ "$edge" = midge ] && [ -n "$EXTRA" ] && printf '%b\n' "$EXTRA"
        # 100 in flight on the bridge (mosquitto: for every client), so that
        # the loopback round trip is not what limits the uplink.
        printf 'connection cloud\naddress 127.0.0.1:%s\nremote_clientid edge-%s\nrestart_timeout 1\ntopic bench/in/# out 1\nmax_inflight_messages 100\n' "$rport" "$edge"
    } >"$work/$edge.conf"
    runner=()
    how=""
    if [ -n "$CAP" ]; then
        limit=$(bytes "$CAP")
        cgroup=$(make_cgroup "$limit")
        if [ -n "$cgroup" ]; then
            how="in cgroup $cgroup (hard limit $limit bytes, no swap)"
        else
            runner=(prlimit "--as=$limit")
            how="under RLIMIT_AS $limit bytes (prlimit; no writable memory cgroup here)"
        fi
    fi
    if [ "$edge" = midge ]; then bin=target/release/midge; else bin="$MOSQUITTO"; fi
    if [ -n "$cgroup" ]; then
        # The broker's own process joins the cgroup before it execs.
        sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cgroup" "$bin" -c "$work/$edge.conf" >"$work/$edge.log" 2>&1 &
    else
        "${runner[@]}" "$bin" -c "$work/$edge.conf" >"$work/$edge.log" 2>&1 &
    fi
    pid=$!
    echo "$pid" >>"$work/pids"
    wait_port "$eport"
    if [ "$edge" = midge ]; then wait_log midge "Bridge cloud: connected"; else wait_log remote "edge-mosquitto"; fi
    [ -n "$how" ] && echo "$edge runs $how"
    if [ "$STALL" = 1 ]; then
        # Subscribes on a persistent session, then never reads again: the
        # broker's output to it backs up, then its queue.
        python3 - "$eport" <<'EOF' &
import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
cid = b"stalled-consumer"
var = b"\x00\x04MQTT\x04\x00\x01\x2c"  # 3.1.1, clean session 0, keep-alive 300
body = var + struct.pack(">H", len(cid)) + cid
s.sendall(bytes([0x10, len(body)]) + body)
topic = b"bench/in/#"
sub = struct.pack(">H", 1) + struct.pack(">H", len(topic)) + topic + b"\x01"
s.sendall(bytes([0x82, len(sub)]) + sub)
time.sleep(100000)
EOF
        echo $! >>"$work/pids"
    fi
    w0=$(wbytes "$pid")
    (
        # RSS once a second while the load runs.
        while kill -0 "$pid" 2>/dev/null; do kb "$pid" VmRSS: >>"$work/$edge.rss"; sleep 1; done
    ) &
    sampler=$!
    rc=0
    # --inflight 4: a sensor has a few messages in flight, and the 200
    # publishers together stay within the subscriber's queue (1000).
    target/release/midge-bench -p "$eport" -s fanin -c "$CLIENTS" -q 1 -r $((CLIENTS * RATE)) --inflight 4 \
        --retained "$RETAINED" --persistent --mqtt "$MQTT" -d "$DURATION" --broker-pid "$pid" --json \
        >"$work/$edge.json" 2>"$work/$edge.bench-err" || rc=$?
    if kill -0 "$pid" 2>/dev/null; then
        # The broker's own counts of what it dropped and refused, and its heap
        # ($SYS, retained; the last value of each topic); midge's also what its
        # bridge forwarded (the drops less the subscriber's losses are the
        # bridge's).
        mosquitto_sub -p "$eport" -v -W 3 -t '$SYS/broker/publish/messages/#' -t '$SYS/broker/heap/#' \
            -t '$SYS/broker/connection/+/messages/sent' 2>/dev/null |
            grep -E "dropped|refused|heap|messages/sent" | awk '{ v[$1] = $0 } END { for (k in v) print v[k] }' | sort |
            sed "s/^/$(printf '%-10s' "$edge") \$SYS: /" >"$work/sys.txt" || true
    fi
    w1=$(wbytes "$pid")
    hwm=$(kb "$pid" VmHWM:)
    alive=yes
    kill -0 "$pid" 2>/dev/null || alive=no
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    python3 - "$edge" "$work/$edge.json" "$work/$edge.rss" "${hwm:-0}" "$w0" "$w1" "$DURATION" "$rc" "$alive" "$work/$edge.bench-err" <<'EOF'
import json, statistics, sys
edge, jpath, rpath, hwm, w0, w1, duration, rc, alive, errpath = sys.argv[1:]
rss = [int(l) for l in open(rpath) if l.strip().isdigit()]
try:
    r = json.loads(open(jpath).read())
except Exception:
    r = None
start = rss[0] if rss else 0
steady = statistics.median(rss[len(rss) // 2:]) if rss else 0
peak = max([int(hwm)] + rss)  # VmHWM, or a sample if the process is gone
print(f"{edge:10s} RSS start {start / 1024:.1f} MiB, steady {steady / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB; alive at the end: {alive}")
if r is None:
    print(f"{edge:10s} load generator failed (exit {rc}): {open(errpath).read().strip()}")
    sys.exit(0)
d = r["delivered"]
print(f"{edge:10s} sent {r['sent']}, delivered {d} ({r['msgs_per_s']} msg/s), loss {r['loss']}, refused acks {r['refused']}, connections closed {r['closed']}")
open(jpath + ".rate", "w").write(str(r["msgs_per_s"]))
if alive == "yes":
    written = int(w1) - int(w0)
    per = written / d if d else 0
    print(f"{edge:10s} written to storage during the run: {written} bytes, {per:.1f} bytes per delivered QoS 1 message")
EOF
    cat "$work/sys.txt" 2>/dev/null || true
    rm -f "$work/sys.txt"
    if [ "$edge" = midge ]; then
        echo "midge      persistence log at the end: $(stat -c %s "$dir/midge.db" 2>/dev/null || echo 0) bytes; compactions: $(grep -c Compacted "$work/midge.log" || true)"
        # Which clients had messages dropped (queue full); refusal lines.
        grep -oE "dropped for client [^ ]+" "$work/midge.log" | sort | uniq -c | sed 's/^ */midge log: /' || true
        echo "midge log: $(grep -c "Refusing" "$work/midge.log" || true) 'Refusing ... PUBLISH' lines, from $(grep -oE "Refusing QoS [12] PUBLISH from [^:]+" "$work/midge.log" | sort -u | wc -l) clients"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [ "$edge" = mosquitto ]; then
        # What mosquitto writes at each autosave (and at exit): one snapshot.
        snap=$(stat -c %s "$dir/mosquitto.db" 2>/dev/null || echo 0)
        # Per message at the rate mosquitto delivered in this run.
        python3 -c "
snap, rate = $snap, float(open('$work/$edge.json.rate').read() or 0) or 1
per = snap / (rate * 1800)
print(f'mosquitto  snapshot at exit {snap} bytes: each autosave (every 1800 s) rewrites that much, {per:.4f} bytes per message at {rate:.0f} msg/s')"
    fi
    if [ -n "$cgroup" ]; then
        for f in memory.max_usage_in_bytes memory.failcnt memory.peak memory.events; do
            [ -f "$cgroup/$f" ] && echo "cgroup $f: $(tr '\n' ' ' <"$cgroup/$f")"
        done
        dmesg 2>/dev/null | grep "oom_memcg=/$(basename "$cgroup")" | tail -1 | sed 's/^/kernel: /' || true
    fi
done
