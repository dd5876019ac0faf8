#!/usr/bin/env bash
# midge against mosquitto, rumqttd and the machine's limit, side by side, same
# load generator.
#
#   scripts/compare.sh            (or: make bench)
#
# Starts a release midge, Debian's mosquitto (installed if missing; started
# here on its own loopback port with a config written here, never the system
# service), rumqttd 0.20.0 (`cargo install`ed if missing, in the background
# while midge builds; its TOML config written here with the same limits) and
# `midge-bench forwarder` (the least a broker must do: exact topics, QoS 0/1,
# one write per connection per turn; it calibrates the machine and plays only
# the pairs and fan-out scenarios at QoS 0/1). Runs every scenario against
# each, rotating the order each round, and prints markdown tables of medians
# with ratios. The deciding figure on a 2-core machine is delivered messages
# per broker CPU-second (the generator fills the other core). Also: idle RSS,
# RSS per connected client, idle CPU with those clients, stripped binary
# sizes (midge and mosquitto). Scenarios named ws-* run the same load over each
# broker's WebSocket listener (`midge-bench --ws`), for the cost of WebSockets
# against TCP.
#
# Environment: ROUNDS (3), DURATION seconds per run (5), CONNS client counts
# for the memory test, one fresh broker each ("1000 5000 10000 19000": the
# open-file limit here is 20000 for both processes; the curve shows whether
# tables grow per client as they double), WS_CONNS for the WebSocket one (10000).
# BROKERS (midge mosquitto rumqttd forwarder: a subset for a quick run).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
CONNS="${CONNS:-1000 5000 10000 19000}"
WS_CONNS="${WS_CONNS:-10000}"
BROKERS="${BROKERS:-midge mosquitto rumqttd forwarder}"
wants() { [[ " $BROKERS " == *" $1 "* ]]; }

# rumqttd compiles for minutes: started first, waited for after midge's build.
# Not --locked: its lock file no longer builds with the current toolchain.
RUMQTTD="$(command -v rumqttd || echo "$HOME/.cargo/bin/rumqttd")"
rumqttd_install=""
if wants rumqttd && [ ! -x "$RUMQTTD" ]; then
    echo "== installing rumqttd 0.20.0 in the background (cargo install; log in /tmp/rumqttd-install.log)"
    cargo install rumqttd --version 0.20.0 >/tmp/rumqttd-install.log 2>&1 &
    rumqttd_install=$!
fi

if ! command -v mosquitto >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO="$(command -v mosquitto)"
cargo build --release --bins -q
MIDGE=target/release/midge
BENCH=target/release/midge-bench
if [ -n "$rumqttd_install" ]; then
    if ! wait "$rumqttd_install"; then
        echo "rumqttd did not install (see /tmp/rumqttd-install.log): its columns stay empty" >&2
    fi
fi
if wants rumqttd && [ ! -x "$RUMQTTD" ]; then
    BROKERS="${BROKERS//rumqttd/}"
fi
ulimit -n "$(ulimit -Hn)"

work="$(mktemp -d)"
results="$work/results.jsonl"
# Brokers are started inside $(...) subshells: their pids go to a file.
cleanup() {
    if [ -f "$work/pids" ]; then
        while read -r p; do kill "$p" 2>/dev/null || true; done <"$work/pids"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# free_port, wait_port
source scripts/lib.sh

# start BROKER PORT WSPORT -> prints the pid. Same limits for every broker;
# an MQTT listener on PORT and a WebSocket listener on WSPORT (mosquitto 2.0
# needs the MQTT one beside it to start its WebSocket listener at all; the
# forwarder has none).
start() {
    local broker="$1" port="$2" wsport="$3" conf="$work/$1-$2.conf"
    case "$broker" in
    midge | mosquitto)
        printf 'allow_anonymous true\nmax_queued_messages 1000\nmax_inflight_messages 20\nlistener %s 127.0.0.1\nlistener %s 127.0.0.1\nprotocol websockets\n' "$port" "$wsport" >"$conf"
        local bin="$MIDGE"
        [ "$broker" = mosquitto ] && bin="$MOSQUITTO"
        "$bin" -c "$conf" >"$work/$broker-$port.log" 2>&1 &
        ;;
    rumqttd)
        # The closest to the others' limits: 20 in flight per client, 200
        # packets queued per outgoing batch, the connections test's 20000.
        conf="$conf.toml"
        cat >"$conf" <<EOT
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 268435455
    max_inflight_count = 20
    dynamic_filters = true
[ws.1]
name = "ws-1"
listen = "127.0.0.1:$wsport"
next_connection_delay_ms = 0
    [ws.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 268435455
    max_inflight_count = 20
    dynamic_filters = true
EOT
        "$RUMQTTD" -q -c "$conf" >"$work/$broker-$port.log" 2>&1 &
        ;;
    forwarder)
        "$BENCH" forwarder --port "$port" >"$work/$broker-$port.log" 2>&1 &
        ;;
    esac
    local pid=$!
    echo "$pid" >>"$work/pids"
    wait_port "$port"
    [ "$broker" = forwarder ] || wait_port "$wsport"
    echo "$pid"
}

# plays BROKER SCENARIO QOS: the forwarder knows neither wildcards (fan-in
# subscribes to bench/in/+), QoS 2 nor WebSockets.
plays() {
    [ "$1" != forwarder ] && return 0
    [[ "$2" == pairs || "$2" == fanout || "$2" == latency ]] && [ "$3" != 2 ]
}

stop() {
    kill "$1" 2>/dev/null || true
    # Not our child (started in a subshell): wait for it to be gone.
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
}

# scenario qos clients [extra bench args...]
scenarios=(
    "fanin 0 8"
    "fanin 1 8"
    "fanin 2 8"
    "pairs 0 8"
    "pairs 1 8"
    "pairs 2 8"
    "fanout 0 100"
    "fanout 1 100"
    "latency 1 1 --rate 10000"
    "ws-pairs 0 8"
    "ws-pairs 1 8"
    "ws-fanout 0 100"
)

read -r -a brokers <<<"$BROKERS"
# Other work on the machine skews the raw rates (less the per-CPU-second
# figures): the table says how busy it was.
export LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== throughput and latency: $ROUNDS rounds x ${#scenarios[@]} scenarios x ${#brokers[@]} brokers (${brokers[*]}), ${DURATION}s each"
for round in $(seq 1 "$ROUNDS"); do
    # Each round starts with the next broker, so none always runs first.
    n=${#brokers[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${brokers[$(((round - 1 + i) % n))]}"); done
    for broker in "${order[@]}"; do
        port="$(free_port)"
        wsport="$(free_port)"
        pid="$(start "$broker" "$port" "$wsport")"
        for s in "${scenarios[@]}"; do
            read -r name qos clients extra <<<"$s"
            plays "$broker" "$name" "$qos" || continue
            scenario="$name"; [ "$name" = latency ] && scenario=pairs
            target="$port"
            if [[ "$name" == ws-* ]]; then
                scenario="${name#ws-}"; target="$wsport"; extra="${extra:-} --ws"
            fi
            # shellcheck disable=SC2086
            "$BENCH" -p "$target" -s "$scenario" -q "$qos" -c "$clients" -d "$DURATION" \
                --broker-pid "$pid" --json --tag "$broker|$name q$qos x$clients" $extra >>"$results" \
                || echo "{\"tag\":\"$broker|$name q$qos x$clients\",\"failed\":true}" >>"$results"
        done
        stop "$pid"
    done
done

echo "== memory and idle CPU: $CONNS connected clients, each with one subscription"
for broker in midge mosquitto; do
    wants "$broker" || continue
    port="$(free_port)"
    wsport="$(free_port)"
    pid="$(start "$broker" "$port" "$wsport")"
    sleep 1
    echo "{\"tag\":\"$broker|idle\",\"rss_kb\":$(awk '/VmRSS/{print $2}' "/proc/$pid/status")}" >>"$results"
    stop "$pid"
    for n in $CONNS; do
        port="$(free_port)"
        wsport="$(free_port)"
        pid="$(start "$broker" "$port" "$wsport")"
        sleep 1
        "$BENCH" -p "$port" -s connections -c "$n" -d 10 --broker-pid "$pid" --json \
            --tag "$broker|connections" >>"$results" || true
        stop "$pid"
    done
    # The same over WebSockets, on a fresh broker.
    port="$(free_port)"
    wsport="$(free_port)"
    pid="$(start "$broker" "$port" "$wsport")"
    sleep 1
    "$BENCH" -p "$wsport" --ws -s connections -c "$WS_CONNS" -d 10 --broker-pid "$pid" --json \
        --tag "$broker|ws-connections" >>"$results" || true
    stop "$pid"
done

cp "$MIDGE" "$work/midge.stripped"
strip "$work/midge.stripped" 2>/dev/null || true
midge_size=$(stat -c %s "$work/midge.stripped")
mosq_size=$(stat -c %s "$MOSQUITTO")

python3 - "$results" "$midge_size" "$mosq_size" "$ROUNDS" "$DURATION" <<'EOF'
import json, statistics, sys, platform, os
path, midge_size, mosq_size, rounds, duration = sys.argv[1:6]
rows = {}
for line in open(path):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    broker, name = r["tag"].split("|", 1)
    rows.setdefault(name, {}).setdefault(broker, []).append(r)

def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None and not r.get("failed")]
    return statistics.median(vals) if vals else None

def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v/1e6:.2f}M{unit}"
    if v >= 1e4:
        return f"{v/1e3:.0f}k{unit}"
    return f"{v:.0f}{unit}"

def ratio(a, b, invert=False):
    if not a or not b:
        return "n/a"
    return f"{(b / a if invert else a / b):.2f}x"

cpu = os.popen("grep -m1 'model name' /proc/cpuinfo").read().split(":")[-1].strip()
print(f"\nMachine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
      f"{rounds} rounds x {duration}s, medians; load average {os.environ.get('LOAD_START', '?')} at the start, "
      f"{' '.join(f'{l:.2f}' for l in os.getloadavg())} at the end.\n")
BROKERS = ["midge", "mosquitto", "rumqttd", "forwarder"]

def cell(by, broker, key, unit=""):
    rs = by.get(broker)
    if not rs:
        return "-"
    return fmt(med(rs, key), unit)

# Per broker CPU-second: the deciding figures, and midge's ratio to each.
print("| scenario | midge msg/CPU-s | mosquitto | rumqttd | forwarder | **midge/mosquitto** | **midge/rumqttd** | **midge/forwarder** |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, by in rows.items():
    if name in ("idle", "connections", "ws-connections"):
        continue
    m = med(by.get("midge", []), "msgs_per_cpu_s")
    cells = [cell(by, b, "msgs_per_cpu_s") for b in BROKERS]
    ratios = []
    for b in BROKERS[1:]:
        ratios.append("-" if not by.get(b) else f"**{ratio(m, med(by[b], 'msgs_per_cpu_s'))}**")
    print(f"| {name} | " + " | ".join(cells + ratios) + " |")
# Raw rates, latency and loss beside them.
print("\n| scenario | msg/s midge | mosquitto | rumqttd | forwarder | p99 midge | mosquitto | rumqttd | forwarder | loss m/q/r/f |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, by in rows.items():
    if name in ("idle", "connections", "ws-connections"):
        continue
    rates = [cell(by, b, "msgs_per_s") for b in BROKERS]
    p99s = [cell(by, b, "p99_us", " us") for b in BROKERS]
    loss = "/".join(cell(by, b, "loss") for b in BROKERS)
    print(f"| {name} | " + " | ".join(rates + p99s) + f" | {loss} |")
idle_m = med(rows.get("idle", {}).get("midge", []), "rss_kb")
idle_q = med(rows.get("idle", {}).get("mosquitto", []), "rss_kb")
conn_m = {r["clients"]: r for r in rows.get("connections", {}).get("midge", []) if "clients" in r}
conn_q = {r["clients"]: r for r in rows.get("connections", {}).get("mosquitto", []) if "clients" in r}
print("\n| memory and idle | midge | mosquitto | midge/mosquitto |")
print("|---|---:|---:|---:|")
print(f"| RSS, idle broker, no clients | {idle_m} kB | {idle_q} kB | {ratio(idle_m, idle_q)} |")
for n in sorted(set(conn_m) | set(conn_q)):
    bm, bq = conn_m.get(n, {}).get("bytes_per_conn"), conn_q.get(n, {}).get("bytes_per_conn")
    print(f"| RSS per connected client ({n:,} clients, one subscription each) | {bm} B | {bq} B | {ratio(bm, bq)} |")
top = max(conn_m, default=0)
cm = conn_m.get(top, {})
cq = conn_q.get(top, {})
bm, bq = cm.get("bytes_per_conn"), cq.get("bytes_per_conn")
if bm:
    print(f"| projected for 100,000 clients | {bm*100000/1048576:.0f} MB | {(bq or 0)*100000/1048576:.0f} MB | |")
wm = rows.get("ws-connections", {}).get("midge", [{}])[0]
wq = rows.get("ws-connections", {}).get("mosquitto", [{}])[0]
bwm, bwq = wm.get("bytes_per_conn"), wq.get("bytes_per_conn")
print(f"| RSS per connected WebSocket client ({wm.get('clients')} clients, one subscription each) | {bwm} B | {bwq} B | {ratio(bwm, bwq)} |")
print(f"| time to connect and subscribe {top:,} | {cm.get('connect_s')} s | {cq.get('connect_s')} s | {ratio(cm.get('connect_s'), cq.get('connect_s'))} |")
print(f"| CPU while idle with them connected | {cm.get('idle_cpu_pct')} % | {cq.get('idle_cpu_pct')} % | |")
print(f"| stripped binary | {int(midge_size)//1024} KB | {int(mosq_size)//1024} KB (broker only; both link libssl) | {ratio(int(midge_size), int(mosq_size))} |")
# WebSockets against TCP on the same broker: how much more CPU a message costs.
print("\n| WebSocket cost (CPU per message, ws / tcp, same broker) | midge | mosquitto | rumqttd |")
print("|---|---:|---:|---:|")
for name in rows:
    if not name.startswith("ws-") or name == "ws-connections":
        continue
    tcp = rows.get(name[3:], {})
    cells = []
    for b in ("midge", "mosquitto", "rumqttd"):
        t, w = med(tcp.get(b, []), "msgs_per_cpu_s"), med(rows[name].get(b, []), "msgs_per_cpu_s")
        cells.append(ratio(t, w))
    print(f"| {name[3:]} | " + " | ".join(cells) + " |")
EOF
