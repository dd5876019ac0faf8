# midge: the usual entry points. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo
PORT ?= 1883
FUZZ_SECONDS ?= 60
# Debian puts the mosquitto broker in /usr/sbin, off a normal user's PATH; the
# set-up check and the tests that run it look for it on PATH.
export PATH := $(PATH):/usr/sbin

# `make install` locations (DESTDIR for staging, as packagers expect).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
# /etc for PREFIX=/usr, PREFIX/etc otherwise.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/midge
# The binary to install; the default is built first.
MIDGE_BIN ?= target/release/midge

.PHONY: all build release run test unit clippy fmt fmt-check clean fuzz fuzz-smoke bench setup install dist dist-test test-no-tls

all: build

build:
	@scripts/setup.sh build
	$(CARGO) build

# Size-tuned release build (see [profile.release] in Cargo.toml).
release:
	@scripts/setup.sh build
	$(CARGO) build --release
	@ls -l target/release/midge

# A broker on PORT (default 1883), loopback only, verbose.
run:
	@scripts/setup.sh build
	$(CARGO) run --release -- -p $(PORT) -v

# Every test: unit, integration (the real binary over TCP), interop (mosquitto
# clients and paho-mqtt), then lint and formatting checks, for the default
# build and the one without TLS.
test:
	@scripts/setup.sh test
	$(CARGO) test --all-targets
	$(CARGO) clippy --all-targets -- -D warnings
	$(MAKE) -s test-no-tls
	$(CARGO) fmt --all -- --check

# The build without TLS (--no-default-features): its unit tests (the portable
# hashes, TLS directives refused at load) and its lints.
test-no-tls:
	$(CARGO) test --no-default-features --lib
	$(CARGO) clippy --no-default-features --lib --bins -- -D warnings

unit:
	$(CARGO) test --lib

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

# midge against mosquitto, same scenarios, table of medians and ratios
# (ROUNDS, DURATION, CONNS; installs mosquitto if missing).
bench:
	scripts/compare.sh

# Every cargo-fuzz target for FUZZ_SECONDS each (installs cargo-fuzz if needed;
# crash-inputs kept in fuzz/regressions/ are replayed first).
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# A short run of every target, as CI does.
fuzz-smoke:
	scripts/fuzz.sh 20

# Install what `make test` needs and lacks (OpenSSL headers, pkg-config,
# mosquitto and its clients, openssl, paho-mqtt >= 2); `scripts/setup.sh --check`
# only says what is missing.
setup:
	scripts/setup.sh test

# The binary, the systemd unit (pointing at BINDIR and SYSCONFDIR), an example
# configuration (also as SYSCONFDIR/midge/midge.conf unless one exists).
install:
	@if [ "$(MIDGE_BIN)" = target/release/midge ]; then $(MAKE) -s release; fi
	install -D -m 0755 $(MIDGE_BIN) $(DESTDIR)$(BINDIR)/midge
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/bin/midge|$(BINDIR)/midge|' -e 's|/etc/midge/|$(SYSCONFDIR)/midge/|' \
		-e 's|/usr/share/doc/midge|$(DOCDIR)|' \
		contrib/midge.service >$(DESTDIR)$(UNITDIR)/midge.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/midge.service
	install -D -m 0644 contrib/midge.conf $(DESTDIR)$(DOCDIR)/midge.conf.example
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/midge/midge.conf ]; then \
		echo "keeping $(DESTDIR)$(SYSCONFDIR)/midge/midge.conf"; \
	else \
		install -D -m 0644 contrib/midge.conf $(DESTDIR)$(SYSCONFDIR)/midge/midge.conf; \
	fi

# Stripped, fully static binaries for Linux gateways (x86_64 and aarch64 musl,
# each with and without TLS), packed with the example config, the systemd unit
# and INSTALL as dist/midge-VERSION-TARGET[-notls].tar.gz. Installs the Rust
# targets, zig and cargo-zigbuild when missing (scripts/dist.sh says what).
# DIST_TARGETS and DIST_VARIANTS (tls, notls) narrow it.
dist:
	scripts/dist.sh

# The dist binaries' smoke test: aarch64 under qemu-aarch64, x86_64 natively
# (tests/dist.rs; every binary asked for must be there and pass).
dist-test: dist
	MIDGE_DIST_SMOKE=1 $(CARGO) test --test dist

clean:
	$(CARGO) clean
	rm -rf dist
