#!/bin/sh
# Memory overhead benchmark (see bench/memory.py). Usage: bench/memory.sh [BUILD_DIR]
# Environment: MEM_RUNS (3). The net configuration needs root.
exec python3 "$(dirname "$0")/memory.py" "${1:-build}"
