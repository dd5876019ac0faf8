#!/usr/bin/env bash
# `make dist`: stripped, fully static midge binaries for Linux gateways, one
# tarball per target and variant in dist/:
#
#   dist/midge-VERSION-TARGET.tar.gz        with TLS (OpenSSL built from source
#                                           here, trimmed, and linked in statically)
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
# (default "tls notls"), DIST_OPENSSL_CFLAGS (more flags for OpenSSL's
# Configure), CARGO_BUILD_JOBS as usual.
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
# Targets whose standard library rustup cannot install (armv7 musl here: its
# download fails) get it compiled from source instead: the rust-src
# component, -Zbuild-std (RUSTC_BOOTSTRAP=1 lets the stable compiler take
# it), and zig's own musl start files and C library for the link
# (-C link-self-contained=no: Rust's copies come with the missing download).
build_std=" "
for t in $targets; do
    if ! grep -qx "$t" <<<"$installed_targets"; then
        say "installing the Rust standard library for $t: rustup target add $t"
        if ! rustup target add "$t"; then
            say "no prebuilt standard library for $t: building it from source (rustup component add rust-src; -Zbuild-std)"
            rustup component add rust-src
            build_std+="$t "
        fi
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

# ------------------------------------------------------------------ OpenSSL
# The TLS variant links OpenSSL built here, once per target, with zig's clang:
# the source that the `openssl-src` crate carries (the version Cargo.lock pins),
# configured without the parts midge never calls. `openssl-src` itself (the
# `vendored-openssl` feature) takes no configure options, and the parts left
# out here are most of its build time (about 8.5 CPU-minutes per target, cold)
# and about a third of the binary (sizes in README "Install on a gateway").
#
# Left out: protocols midge does not speak (SSL 3, DTLS, QUIC, SRP, SRTP,
# NPN, certificate transparency, OCSP, CMS, CMP, time stamps, the HTTP
# client), engines and loadable modules, legacy and national ciphers and
# digests (DES, RC2/RC4/RC5, Blowfish, CAST, IDEA, SEED, Camellia, ARIA,
# GOST, SM2/3/4, MD2/MD4/MDC2, RIPEMD-160, Whirlpool), DSA, binary curves,
# post-quantum signatures (ML-DSA, SLH-DSA, LMS), scrypt, Argon2, SipHash,
# OCB and SIV modes, the console UI, the apps, tests and docs, and source
# file names in error records (about 50 KB of build paths). Kept:
# TLS 1.2 and 1.3 with RSA, ECDSA and Ed25519 certificates, ECDHE, DHE
# (dhparamfile), PSK, X25519 and ML-KEM key exchange, AES (GCM, CCM, CBC),
# ChaCha20-Poly1305, SHA-1/2/3, CRLs, PEM files.
OPENSSL_OPTIONS=(
    no-shared no-module no-dso no-engine no-async no-tests no-apps no-docs
    no-comp no-zlib no-zlib-dynamic no-legacy no-ui-console
    no-ssl3 no-weak-ssl-ciphers no-dtls no-quic no-srp no-srtp no-nextprotoneg
    no-ct no-ocsp no-cms no-cmp no-ts no-http no-rfc3779 no-ssl-trace
    no-des no-rc2 no-rc4 no-rc5 no-bf no-cast no-idea no-seed no-camellia no-aria
    no-gost no-sm2 no-sm3 no-sm4 no-md2 no-md4 no-mdc2 no-rmd160 no-whirlpool
    no-dsa no-ec2m no-ml-dsa no-slh-dsa no-lms no-scrypt no-argon2 no-siphash
    no-ocb no-siv no-filenames
)
# Optimised for size (-Os after OpenSSL's own -O3: the last one counts; the
# bulk ciphers and hashes are assembly either way), sections for the linker's
# garbage collection and position-independent code for static-pie (as cc
# gives openssl-src), and musl's missing secure heap (openssl/openssl#7207).
OPENSSL_CFLAGS=(-Os -ffunction-sections -fdata-sections -fPIC -DOPENSSL_NO_SECURE_MEMORY)

# zig's C compiler, ar and ranlib: `zig` on PATH, else the wheel's.
zig_cmd() {
    if have zig; then echo zig; else echo "python3 -m ziglang"; fi
}

# OpenSSL for Rust target $1, built into target/dist-openssl/$1 unless a
# build with the same source and options is there. Prints its directory.
build_openssl() {
    local t=$1 os_target zig_target
    case "$t" in
        x86_64-unknown-linux-musl) os_target=linux-x86_64 zig_target=x86_64-linux-musl ;;
        aarch64-unknown-linux-musl) os_target=linux-aarch64 zig_target=aarch64-linux-musl ;;
        armv7-unknown-linux-musleabihf)
            os_target=linux-armv4 zig_target="arm-linux-musleabihf -mcpu=generic+v7a+vfp3d16"
            ;;
        *)
            say "no OpenSSL configuration for $t (scripts/dist.sh: build_openssl)" >&2
            return 1
            ;;
    esac
    local manifest
    manifest=$(cargo metadata --format-version 1 --locked --features vendored-openssl |
        python3 -c 'import json, sys
print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "openssl-src"))')
    local src
    src=$(dirname "$manifest")/openssl
    local prefix=$PWD/target/dist-openssl/$t
    local stamp="$src ${OPENSSL_OPTIONS[*]} ${OPENSSL_CFLAGS[*]} ${DIST_OPENSSL_CFLAGS:-} $zig_target"
    if [ -f "$prefix/lib/libssl.a" ] && [ "$(cat "$prefix/.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "$prefix"
        return
    fi
    local build=target/dist-openssl/build-$t zig
    zig=$(zig_cmd)
    rm -rf "$build" "$prefix"
    mkdir -p "$build"
    local start
    start=$(date +%s)
    say "building OpenSSL $(sed -n 's/^MAJOR=//p;s/^MINOR=//p;s/^PATCH=//p' "$src/VERSION.dat" | paste -sd.) for $t in $build" >&2
    # shellcheck disable=SC2086 # DIST_OPENSSL_CFLAGS: extra flags, split on purpose
    (
        cd "$build"
        CC="$zig cc -target $zig_target" AR="$zig ar" RANLIB="$zig ranlib" \
            perl "$src/Configure" "$os_target" --prefix="$prefix" --libdir=lib \
            "${OPENSSL_OPTIONS[@]}" "${OPENSSL_CFLAGS[@]}" ${DIST_OPENSSL_CFLAGS:-}
        make -j"$(nproc)" build_libs
        make install_dev
    ) >"$build.log" 2>&1 || {
        say "OpenSSL build for $t failed; the last lines of $build.log:" >&2
        tail -n 30 "$build.log" >&2
        return 1
    }
    echo "$stamp" >"$prefix/.stamp"
    rm -rf "$build"
    say "OpenSSL for $t: $prefix, $(( $(date +%s) - start )) s" >&2
    echo "$prefix"
}

# ------------------------------------------------------------------ build
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# Reproducible tarballs: file times from the last commit.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
mkdir -p dist

for t in $targets; do
    for v in $variants; do
        case "$v" in
            tls)
                # openssl-sys reads TARGET_OPENSSL_DIR (upper case,
                # underscores) for this target only; the host's build
                # scripts keep the system library.
                openssl_dir=$(build_openssl "$t")
                env_prefix=$(echo "$t" | tr 'a-z-' 'A-Z_')
                export "${env_prefix}_OPENSSL_DIR=$openssl_dir" "${env_prefix}_OPENSSL_STATIC=1"
                features=()
                # Panic messages without file:line, as for notls below: about
                # 20 KB, what keeps the aarch64 binary under 4,000,000 bytes.
                variant_env=(RUSTC_BOOTSTRAP=1 "RUSTFLAGS=${RUSTFLAGS:-} -Zlocation-detail=none")
                target_dir=target
                name="midge-$version-$t"
                ;;
            notls)
                # Its own target dir: the two variants would otherwise rebuild
                # each other's binary at the same path.
                # For the smallest devices: size over speed (opt-level z
                # saves about a fifth of the binary against the release
                # profile's 3; measured in README "Install on a gateway").
                # Panic messages without file:line (-Zlocation-detail=none,
                # through RUSTC_BOOTSTRAP as for armv7's std below): about
                # 22 KB, what keeps the aarch64 binary under 1,000,000 bytes.
                # midge has no panic reachable from the network; one that
                # happens still prints its message and aborts.
                features=(--no-default-features --config 'profile.release.opt-level="z"')
                variant_env=(RUSTC_BOOTSTRAP=1 "RUSTFLAGS=${RUSTFLAGS:-} -Zlocation-detail=none")
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
        std_args=()
        std_env=("${variant_env[@]}")
        if [[ "$build_std" == *" $t "* ]]; then
            std_args=(-Zbuild-std=std,panic_abort)
            std_env=(RUSTC_BOOTSTRAP=1 "RUSTFLAGS=${RUSTFLAGS:-} -C link-self-contained=no ${variant_env[*]:+-Zlocation-detail=none}")
        fi
        env "${std_env[@]}" CARGO_TARGET_DIR=$target_dir \
            cargo zigbuild --release --locked --target "$t" "${std_args[@]}" "${features[@]}"
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
