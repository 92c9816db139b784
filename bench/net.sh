#!/bin/sh
# virtio-net benchmark: ringvm vs QEMU (vhost=off) in private network namespaces, plus the
# device-only harness (see bench/net.py). Usage: bench/net.sh [BUILD_DIR]   (root)
# Environment: NET_RUNS (default 3), NET_SECS (2), NET_HARNESS_SECS (2), NET_BACKLOG (256),
# NET_SIZES (64,1500), NET_NO_HARNESS=1.
exec python3 "$(dirname "$0")/net.py" "${1:-build}"
