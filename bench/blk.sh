#!/bin/sh
# virtio-blk benchmark (see bench/blk.py). Usage: bench/blk.sh [BUILD_DIR]
# Environment: BLK_SIZE_MB (1024), BLK_RUNS (3), BLK_SECS (2), BLK_HARNESS_SECS (2),
# BLK_FIO_SECS (2), BLK_QDS (1,32), BLK_HARNESS_QDS (1,32,128), BLK_QCOW2 (1),
# BLK_DIRECT (1), BLK_DIRECT_DIR (/var/tmp).
exec python3 "$(dirname "$0")/blk.py" "${1:-build}"
