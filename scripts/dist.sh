#!/usr/bin/env bash
# `make dist`: stripped, fully static midge binaries for Linux gateways, one
# tarball per target and variant in dist/:
#
#   dist/midge-VERSION-TARGET.tar.gz        with TLS (OpenSSL built from source
#                                           and linked in: the vendored-openssl feature)
#   dist/midge-VERSION-TARGET-notls.tar.gz  without TLS (--no-default-features)
#
# each holding the binary, an example config (contrib/midge.conf), the systemd
# unit (contrib/midge.service) and INSTALL (contrib/INSTALL.gateway).
#
# The C side (OpenSSL for the TLS variant; the final link for both) is compiled
# with zig's clang, which carries musl's headers and C library for every target,
# through cargo-zigbuild: both come as prebuilt wheels from PyPI (`ziglang`,
# `cargo-zigbuild`), so nothing is compiled to get them. What is missing is
# installed and said: the Rust targets with rustup, the two wheels into a
# virtualenv under target/dist-tools/ (nothing system-wide).
#
# Environment: DIST_TARGETS (default: x86_64 and aarch64 musl), DIST_VARIANTS
# (default "tls notls"), CARGO_BUILD_JOBS as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=${DIST_TARGETS:-"x86_64-unknown-linux-musl aarch64-unknown-linux-musl"}
variants=${DIST_VARIANTS:-"tls notls"}
# Known-good pair; any later release of either should do.
ZIGLANG=${DIST_ZIGLANG:-ziglang==0.17.1}
ZIGBUILD=${DIST_ZIGBUILD:-cargo-zigbuild==0.24.1}

have() { command -v "$1" >/dev/null 2>&1; }
say() { echo "dist: $*"; }

# ------------------------------------------------------------------ tools
installed_targets=$(rustup target list --installed)
for t in $targets; do
    if ! grep -qx "$t" <<<"$installed_targets"; then
        say "installing the Rust standard library for $t: rustup target add $t"
        rustup target add "$t"
    fi
done

zig_ok() { have zig || python3 -c 'import ziglang' >/dev/null 2>&1; }
if ! have cargo-zigbuild || ! zig_ok; then
    venv=target/dist-tools/venv
    if [ ! -x "$venv/bin/cargo-zigbuild" ] || ! "$venv/bin/python3" -c 'import ziglang' >/dev/null 2>&1; then
        say "installing zig and cargo-zigbuild from PyPI into $venv: pip install $ZIGLANG $ZIGBUILD"
        python3 -m venv "$venv"
        "$venv/bin/python3" -m pip install -q --disable-pip-version-check "$ZIGLANG" "$ZIGBUILD"
    fi
    # cargo-zigbuild runs `python3 -m ziglang` when no `zig` is on PATH: the
    # venv's python3 first.
    export PATH="$PWD/$venv/bin:$PATH"
fi
# OpenSSL's own build (the TLS variant) is driven by perl and make.
for tool in perl make; do
    have "$tool" || { say "needs $tool (Debian: apt-get install $tool)" >&2; exit 1; }
done

# ------------------------------------------------------------------ build
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# Reproducible tarballs: file times from the last commit.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
mkdir -p dist

for t in $targets; do
    for v in $variants; do
        case "$v" in
            tls)
                features=(--features vendored-openssl)
                target_dir=target
                name="midge-$version-$t"
                ;;
            notls)
                # Its own target dir: the two variants would otherwise rebuild
                # each other's binary at the same path.
                # For the smallest devices: size over speed (opt-level z
                # saves about a fifth of the binary against the release
                # profile's 3; measured in README "Install on a gateway").
                features=(--no-default-features --config 'profile.release.opt-level="z"')
                target_dir=target/dist-notls
                name="midge-$version-$t-notls"
                ;;
            *)
                say "unknown variant '$v' (tls or notls)" >&2
                exit 2
                ;;
        esac
        say "building $name"
        start=$(date +%s)
        CARGO_TARGET_DIR=$target_dir cargo zigbuild --release --locked --target "$t" "${features[@]}"
        bin="$target_dir/$t/release/midge"
        desc=$(file -b "$bin")
        # Fully static: no program interpreter, no shared libraries (`static-pie
        # linked` is static too: it relocates itself).
        case "$desc" in
            *"statically linked"* | *"static-pie linked"*) ;;
            *)
                say "$bin is not static: $desc" >&2
                exit 1
                ;;
        esac
        case "$desc" in
            *", stripped"*) ;;
            *)
                say "$bin is not stripped: $desc" >&2
                exit 1
                ;;
        esac
        stage=target/dist-stage/$name
        rm -rf "$stage"
        mkdir -p "$stage"
        install -m 0755 "$bin" "$stage/midge"
        install -m 0644 contrib/midge.conf "$stage/midge.conf"
        install -m 0644 contrib/midge.service "$stage/midge.service"
        sed -e "s/@TARGET@/$t/g" -e "s/@VARIANT@/$v/g" -e "s/@VERSION@/$version/g" \
            contrib/INSTALL.gateway >"$stage/INSTALL"
        chmod 0644 "$stage/INSTALL"
        tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
            -C target/dist-stage -czf "dist/$name.tar.gz" "$name"
        size=$(stat -c %s "$stage/midge")
        say "dist/$name.tar.gz: midge $size bytes ($(( (size + 1023) / 1024 )) KiB), $(( $(date +%s) - start )) s; $desc"
    done
done
ls -l dist/
