# Thin wrapper around meson (the source of truth). See README.md.
BUILD      ?= build
ASAN_BUILD ?= build-asan
NINJA      ?= ninja

.PHONY: all build deps check check-asan demo bench clean format

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

check: build
	tests/run-tests $(BUILD)

check-asan: $(ASAN_BUILD)/build.ninja
	$(NINJA) -C $(ASAN_BUILD)
	tests/run-tests $(ASAN_BUILD)

demo: build
	tools/demo $(BUILD)

bench: build
	bench/run-all $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i
