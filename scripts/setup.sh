#!/usr/bin/env bash
# Set-up for a bare Debian/Ubuntu machine with only Rust installed: finds what
# `make run` (goal `build`) or `make test` (goal `test`, the default) needs and
# lacks, says what it installs, and installs it: Debian packages with apt-get
# (through sudo only when not root), paho-mqtt with the python3 on PATH's pip,
# clippy and rustfmt with rustup. Cheap when everything is there.
#
# With --check nothing is installed: a missing piece prints one line naming the
# exact command to run, and the exit status is 1.
#
# Usage: scripts/setup.sh [--check] [build|test]
set -euo pipefail

check=0
goal=test
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        build | test) goal="$arg" ;;
        *)
            echo "setup: unknown argument '$arg' (usage: scripts/setup.sh [--check] [build|test])" >&2
            exit 2
            ;;
    esac
done

have() { command -v "$1" >/dev/null 2>&1; }

missing=()  # what is missing, as the user knows it
apt=()      # Debian packages that bring it
pip=0       # paho-mqtt >= 2 through pip
rustup=0    # clippy / rustfmt

need_apt() {
    missing+=("$1")
    local p
    for p in "${apt[@]}"; do [ "$p" = "$2" ] && return 0; done
    apt+=("$2")
}

# Building: the openssl crate compiles against OpenSSL's headers, found by pkg-config.
have pkg-config || need_apt pkg-config pkg-config
if ! { [ -e /usr/include/openssl/ssl.h ] || { have pkg-config && pkg-config --exists openssl; }; }; then
    need_apt "OpenSSL headers" libssl-dev
fi

if [ "$goal" = test ]; then
    # Interop and security tests drive the real mosquitto tools; openssl makes
    # the test certificates.
    have mosquitto || need_apt mosquitto mosquitto
    have mosquitto_passwd || need_apt mosquitto_passwd mosquitto
    have mosquitto_sub || need_apt mosquitto_sub mosquitto-clients
    have mosquitto_pub || need_apt mosquitto_pub mosquitto-clients
    have openssl || need_apt openssl openssl
    # tests/dist.rs runs the aarch64 dist binary under user-mode emulation
    # (`make dist-test`; CI).
    have qemu-aarch64 || have qemu-aarch64-static || need_apt qemu-aarch64 qemu-user
    # WebSocket tests drive MQTT.js (from npm, fetched by the tests into
    # target/) in Node.js and in a headless Chromium.
    have node || need_apt node nodejs
    have npm || need_apt npm npm
    have chromium || need_apt chromium chromium
    # The paho scripts need paho-mqtt 2 (its callback API changed in 2.0).
    if ! have python3; then
        need_apt python3 python3
        need_apt "paho-mqtt>=2" python3-pip
        pip=1
    elif ! python3 -c 'import sys, paho.mqtt as m; sys.exit(int(m.__version__.split(".")[0]) < 2)' >/dev/null 2>&1; then
        missing+=("paho-mqtt>=2")
        pip=1
        python3 -m pip --version >/dev/null 2>&1 || need_apt pip python3-pip
    fi
    # `make test` ends with clippy and rustfmt.
    if have cargo; then
        if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
            missing+=("clippy/rustfmt")
            rustup=1
        fi
    fi
fi

[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo "; fi
steps=()
if [ ${#apt[@]} -gt 0 ]; then
    steps+=("${sudo}apt-get update && ${sudo}apt-get install -y ${apt[*]}")
fi
[ "$pip" = 1 ] && steps+=("python3 -m pip install 'paho-mqtt>=2,<3'")
[ "$rustup" = 1 ] && steps+=("rustup component add clippy rustfmt")
command=""
for s in "${steps[@]}"; do command="${command:+$command && }$s"; done

# One line: what is missing and the command that brings it.
line="setup: missing ${missing[*]}; run: $command"
if [ "$check" = 1 ]; then
    echo "$line"
    exit 1
fi
if [ ${#apt[@]} -gt 0 ] && { ! have apt-get || { [ -n "$sudo" ] && ! have sudo; }; }; then
    echo "$line" >&2
    exit 1
fi

echo "setup: installing what $goal needs: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if [ ${#apt[@]} -gt 0 ]; then
    echo "setup: ${sudo}apt-get install -y ${apt[*]}"
    ${sudo}apt-get update -qq
    # shellcheck disable=SC2068
    ${sudo}apt-get install -y -qq ${apt[@]} >/dev/null
fi
if [ "$pip" = 1 ]; then
    echo "setup: python3 -m pip install 'paho-mqtt>=2,<3'"
    python3 -m pip install -q --disable-pip-version-check 'paho-mqtt>=2,<3'
fi
if [ "$rustup" = 1 ]; then
    echo "setup: rustup component add clippy rustfmt"
    rustup component add clippy rustfmt
fi
