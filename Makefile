# Thin wrapper around meson (the source of truth). See README.md.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
NINJA      ?= ninja

.PHONY: all build deps check check-asan demo bench clean format test-kernel
.PHONY: fuzz fuzz-build fuzz-smoke fuzz-check
.PHONY: bench-ci bench-report

all: build

deps:
	tools/install-deps

$(BUILD)/build.ninja:
	@tools/install-deps -q
	meson setup $(BUILD)

$(ASAN_BUILD)/build.ninja:
	@tools/install-deps -q
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Doptimization=1

build: $(BUILD)/build.ninja
	@tools/install-deps -q
	$(NINJA) -C $(BUILD)

# The Linux boot tests need Debian's cloud kernel; fetching it is cached and
# may fail offline (the tests then skip, or fail under CI=true).
test-kernel:
	-@tools/fetch-test-kernel $(BUILD)/test-kernel >/dev/null

check: build test-kernel
	tests/run-tests $(BUILD)
	@$(MAKE) --no-print-directory fuzz-check

check-asan: $(ASAN_BUILD)/build.ninja
	$(NINJA) -C $(ASAN_BUILD)
	-@tools/fetch-test-kernel $(ASAN_BUILD)/test-kernel >/dev/null
	tests/run-tests $(ASAN_BUILD)

demo: build
	tools/demo $(BUILD)

bench: build
	bench/run-all $(BUILD)

# Fuzzing (docs/fuzzing.md): libFuzzer targets built by clang in their own dir.
FUZZ_TARGETS := $(shell sed -e 's/\#.*//' tests/fuzz/targets.list)
SECS ?= 600
FUZZ_SMOKE_SECS ?= 20

$(FUZZ_BUILD)/build.ninja:
	@tools/install-deps -q
	CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug -Doptimization=1

fuzz-build: $(FUZZ_BUILD)/build.ninja
	$(NINJA) -C $(FUZZ_BUILD) $(addprefix tests/fuzz/fuzz-,$(FUZZ_TARGETS))

# make fuzz TARGET=name [SECS=n]: one long run (new inputs stay in $(FUZZ_BUILD)/fuzz/).
fuzz: fuzz-build
	@test -n "$(TARGET)" || { echo "usage: make fuzz TARGET=name [SECS=n]; targets: $(FUZZ_TARGETS)" >&2; exit 2; }
	tests/fuzz/run $(FUZZ_BUILD) $(TARGET) $(SECS)

# Every target for FUZZ_SMOKE_SECS seconds; fails on any crash.
fuzz-smoke: fuzz-build
	tests/fuzz/run $(FUZZ_BUILD) --smoke $(FUZZ_SMOKE_SECS)

# What `make check` runs after the suite: fuzz-smoke when clang can build
# libFuzzer targets; under CI=true a missing clang is a failure.
fuzz-check:
	@if tests/fuzz/run --have-clang; then \
		$(MAKE) --no-print-directory fuzz-smoke; \
	elif [ "$$CI" = true ]; then \
		echo "fuzz-smoke: CI=true but clang with libFuzzer is missing (make deps)" >&2; exit 1; \
	else \
		echo "fuzz-smoke: skipped: clang with libFuzzer is not installed (make deps)"; \
	fi

# The short regression gate CI runs after `make check` (bench/ci.py, bench/baseline.json).
bench-ci: build
	python3 bench/ci.py $(BUILD)

# SVG plots and a Markdown table from the latest `make bench` results (gnuplot).
bench-report:
	@tools/install-deps -q
	python3 bench/report.py

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i
