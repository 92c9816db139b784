#!/bin/sh
# Proxy and virtio-rng benchmark (see bench/proxy.py). Usage: bench/proxy.sh [BUILD_DIR]
# Environment: PROXY_RUNS (default 5), PROXY_LAT_N (2000), PROXY_RNG_SECS (2).
exec python3 "$(dirname "$0")/proxy.py" "${1:-build}"
