# Thin wrapper around meson (the source of truth). See README.md.
BUILD      ?= build
ASAN_BUILD ?= build-asan
NINJA      ?= ninja

.PHONY: all build deps check check-asan demo bench clean format test-kernel
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

check-asan: $(ASAN_BUILD)/build.ninja
	$(NINJA) -C $(ASAN_BUILD)
	-@tools/fetch-test-kernel $(ASAN_BUILD)/test-kernel >/dev/null
	tests/run-tests $(ASAN_BUILD)

demo: build
	tools/demo $(BUILD)

bench: build
	bench/run-all $(BUILD)

# The short regression gate CI runs after `make check` (bench/ci.py, bench/baseline.json).
bench-ci: build
	python3 bench/ci.py $(BUILD)

# SVG plots and a Markdown table from the latest `make bench` results (gnuplot).
bench-report:
	@tools/install-deps -q
	python3 bench/report.py

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i
