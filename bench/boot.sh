#!/bin/sh
# Boot benchmark (see bench/boot.py). Usage: bench/boot.sh [BUILD_DIR]
exec python3 "$(dirname "$0")/boot.py" "${1:-build}"
