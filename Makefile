# midge: the usual entry points. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo
PORT ?= 1883
FUZZ_SECONDS ?= 60

.PHONY: all build release run test unit clippy fmt fmt-check clean fuzz fuzz-smoke bench

all: build

build:
	$(CARGO) build

# Size-tuned release build (see [profile.release] in Cargo.toml).
release:
	$(CARGO) build --release
	@ls -l target/release/midge

# A broker on PORT (default 1883), loopback only, verbose.
run:
	$(CARGO) run --release -- -p $(PORT) -v

# Every test: unit, integration (the real binary over TCP), interop (mosquitto
# clients and paho-mqtt), then lint and formatting checks.
test:
	$(CARGO) test --all-targets
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) fmt --all -- --check

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

clean:
	$(CARGO) clean
