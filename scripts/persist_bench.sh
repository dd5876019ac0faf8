#!/usr/bin/env bash
# QoS 1 throughput to persistent sessions with persistence off, `persistence_sync
# periodic`, `persistence_sync always` (fsync per loop turn), and mosquitto with
# `persistence true` (which saves every autosave_interval), same load generator.
#
#   scripts/persist_bench.sh        (DURATION seconds per run, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5}"
cargo build --release --bins -q
work="$(mktemp -d)"
trap 'kill $(cat "$work/pids" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
# free_port, wait_port
source scripts/lib.sh
run() {
    local name="$1" bin="$2" extra="$3" p slug
    p="$(free_port)"
    slug="$(echo "$name" | tr -c 'a-z0-9\n' '_')"
    mkdir -p "$work/$slug"
    # mosquitto started as root runs as its own user: let it write there.
    chmod 777 "$work/$slug"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence_location %s/\n%b\n' "$p" "$work/$slug" "$extra" >"$work/$slug.conf"
    "$bin" -c "$work/$slug.conf" >"$work/$slug.log" 2>&1 &
    local pid=$!
    echo "$pid" >>"$work/pids"
    wait_port "$p"
    # First run creates the persistent sessions; the measured run reuses them.
    target/release/midge-bench -p "$p" -s pairs -q 1 -c 4 -n 10 --persistent >/dev/null
    printf '%-34s ' "$name"
    out="$(target/release/midge-bench -p "$p" -s pairs -q 1 -c 4 -d "$DURATION" --persistent --broker-pid "$pid")"
    echo "$out" | sed -n "1p;3p"
    if [ -f "$work/$slug/midge.db" ]; then
        echo "    log $(stat -c %s "$work/$slug/midge.db") bytes after the run; compactions: $(grep -c Compacted "$work/$slug.log" || true), last: $(grep Compacted "$work/$slug.log" | tail -1 | sed 's/.*bytes in /pause /')"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
run "midge, persistence off" target/release/midge "persistence false"
run "midge, persistence_sync periodic" target/release/midge "persistence true\npersistence_sync periodic\nautosave_interval 30"
run "midge, persistence_sync always" target/release/midge "persistence true\npersistence_sync always"
run "mosquitto, persistence true" "$(command -v mosquitto)" "persistence true\nautosave_interval 30"
