#!/bin/sh
# virtio-vsock benchmark: the device-only harness (bench-vsock-harness: the jailed device driven
# from the host, next to a host-only Unix socketpair through the same client), see bench/vsock.py.
# Usage: bench/vsock.sh [BUILD_DIR]   Environment: VSOCK_RUNS (default 3), VSOCK_SECS (2),
# VSOCK_NO_SANDBOX=1 (fork the device without the jail), VSOCK_PROBE=1 (also the guest-driven
# part: the probe's vsock.bench through bench/vsock_probe.py).
exec python3 "$(dirname "$0")/vsock.py" "${1:-build}"
