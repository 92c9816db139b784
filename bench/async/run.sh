#!/usr/bin/env bash
# bench/async/run.sh BUILD_DIR — benchmarks of async/ (the coroutine executor):
# context-switch cost, NOP throughput through the executor vs a plain liburing
# loop with the same batching, and 4 KiB random reads of a 256 MiB tmpfs file
# at QD1/QD32 through the executor vs fio's io_uring engine, all in one run.
# tmpfs has no RWF_NOWAIT, so io_uring hands every read to an io-wq worker
# thread: the random-read numbers are taken twice, unpinned (worker and
# submitter on different vCPUs, dominated by cross-CPU wake-up latency) and
# pinned to one CPU with taskset (no cross-CPU wake-ups). The NOP comparison is
# also taken both ways; pinned is the stable one on a shared machine.
# Each measurement is repeated RUNS times (interleaved, so background load
# hits all of them alike); the table shows medians. Writes
# bench/results/async-<timestamp>.json.
set -euo pipefail

build=${1:?usage: bench/async/run.sh BUILD_DIR}
runs=${RUNS:-5}
secs=${SECS:-2}
here=$(cd "$(dirname "$0")" && pwd)
results=$(cd "$here/.." && pwd)/results
bin="$build/async/bench-async"
file=${BENCH_FILE:-/dev/shm/ringvm-bench-async.img}

[ -x "$bin" ] || { echo "run.sh: $bin not built (ninja -C $build)" >&2; exit 1; }
command -v fio >/dev/null || { echo "run.sh: fio not installed (make deps)" >&2; exit 1; }
mkdir -p "$results"

created=0
if [ ! -f "$file" ] || [ "$(stat -c %s "$file")" -ne $((256 << 20)) ]; then
	dd if=/dev/urandom of="$file" bs=1M count=256 status=none
	created=1
fi
cleanup() { if [ "$created" = 1 ]; then rm -f "$file"; fi; }
trap cleanup EXIT

raw=$(mktemp)
trap 'rm -f "$raw"; cleanup' EXIT

# "name value" lines into $raw; one function per measured thing.
pin=()
ours() { "${pin[@]}" "$bin" "$@" | awk -v p="${tag:-}" '{print $1 p, $2}' >>"$raw"; }
fio_iops() { # name qd extra-args...
	local name=$1${tag:-} qd=$2
	shift 2
	"${pin[@]}" fio --name=rr --filename="$file" --rw=randread --bs=4k --ioengine=io_uring \
		--iodepth="$qd" --runtime="$secs" --time_based --size=256M --norandommap \
		--randrepeat=0 --output-format=json "$@" 2>/dev/null |
		python3 -c 'import json,sys; print(sys.argv[1], json.load(sys.stdin)["jobs"][0]["read"]["iops"])' \
			"$name" >>"$raw"
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "async bench: $runs runs, ${secs}s per I/O run, file $file" >&2
for r in $(seq "$runs"); do
	echo "  run $r/$runs" >&2
	ours switch 20000000
	ours yield 10000000 2
	for tag in "" _pinned; do
		if [ -n "$tag" ]; then pin=(taskset -c "$(($(nproc) - 1))"); else pin=(); fi
		# NOPs: 32 tasks each looping on exec_nop vs a plain loop keeping 32
		# NOPs in flight (one submit-and-wait per batch), back to back
		ours nop-exec 32 5000000
		ours nop-batch 32 5000000
		ours nop-uring 32 5000000
		ours randread "$file" 1 "$secs"
		fio_iops fio_qd1 1
		ours randread "$file" 32 "$secs"
		fio_iops fio_qd32 32
		# fio submitting and reaping in batches, as the executor does
		fio_iops fio_qd32_batched 32 --iodepth_batch_submit=32 --iodepth_batch_complete_min=1
	done
	tag=""
	pin=()
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="$results/async-$stamp.json"
python3 - "$raw" "$out" "$runs" "$secs" "$load0" <<'PY'
import json, statistics, sys, platform, os
raw, out, runs, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
load0 = sys.argv[5].split()
vals = {}
for line in open(raw):
    k, v = line.split()
    vals.setdefault(k, []).append(float(v))
med = {k: statistics.median(v) for k, v in vals.items()}
def ratio(a, b):
    return med[a] / med[b] if med.get(b) else None
def io_rows(t, label):
    fio1 = med["fio_qd1" + t]
    fio32 = max(med["fio_qd32" + t], med["fio_qd32_batched" + t])
    ours1, ours32 = med["randread_qd1" + t], med["randread_qd32" + t]
    return [
        (f"4K randread QD1, {label}", f"{ours1/1e3:.0f} k IOPS",
         f"fio io_uring QD1: {fio1/1e3:.0f} k IOPS", f"{ours1/fio1:.2f}x (target >= 0.9x)"),
        (f"4K randread QD32, {label}", f"{ours32/1e3:.0f} k IOPS",
         f'fio io_uring QD32: {med["fio_qd32" + t]/1e3:.0f} k IOPS (batched {med["fio_qd32_batched" + t]/1e3:.0f} k)',
         f"{ours32/fio32:.2f}x vs the better fio (target >= 0.9x)"),
    ]
rows = [
    ("context switch (coro_switch)", f'{med["switch_ns"]:.1f} ns/switch', "", ""),
    ("executor yield (2 tasks)", f'{med["yield_ns"]:.1f} ns/yield', "", ""),
] + [(f"NOPs, 32 tasks, executor, {label}", f'{med["nop_exec" + t]/1e6:.2f} M ops/s',
       f'plain liburing, batch 32: {med["nop_uring" + t]/1e6:.2f} M ops/s',
       f'{ratio("nop_exec" + t, "nop_uring" + t):.2f}x (target >= 0.9x)')
      for t, label in (("", "unpinned"), ("_pinned", "1 CPU"))
] + [(f"NOPs, 1 task, exec_batch of 32, {label}", f'{med["nop_batch" + t]/1e6:.2f} M ops/s',
       f'plain liburing, batch 32: {med["nop_uring" + t]/1e6:.2f} M ops/s',
       f'{ratio("nop_batch" + t, "nop_uring" + t):.2f}x (target >= 0.9x)')
      for t, label in (("", "unpinned"), ("_pinned", "1 CPU"))
] + io_rows("", "unpinned") + io_rows("_pinned", "1 CPU")
w = [max(len(r[i]) for r in rows) for i in range(4)]
hdr = ("measure", "ringvm async", "baseline (same run)", "ratio")
w = [max(w[i], len(hdr[i])) for i in range(4)]
fmt = "  ".join("{:<%d}" % x for x in w)
print(fmt.format(*hdr))
print(fmt.format(*["-" * x for x in w]))
for r in rows:
    print(fmt.format(*r))
doc = {
    "bench": "async",
    "runs": runs,
    "io_seconds_per_run": secs,
    "kernel": platform.release(),
    "cpus": os.cpu_count(),
    "machine": {"loadavg_start": load0,
                "loadavg_end": open("/proc/loadavg").read().split()[:3]},
    "medians": med,
    "samples": vals,
    "ratios": {
        "nop_exec_vs_uring": ratio("nop_exec", "nop_uring"),
        "nop_exec_vs_uring_pinned": ratio("nop_exec_pinned", "nop_uring_pinned"),
        "nop_batch_vs_uring": ratio("nop_batch", "nop_uring"),
        "nop_batch_vs_uring_pinned": ratio("nop_batch_pinned", "nop_uring_pinned"),
        **{f"randread_qd1{t}_vs_fio": med["randread_qd1" + t] / med["fio_qd1" + t]
           for t in ("", "_pinned")},
        **{f"randread_qd32{t}_vs_best_fio": med["randread_qd32" + t]
           / max(med["fio_qd32" + t], med["fio_qd32_batched" + t]) for t in ("", "_pinned")},
    },
}
json.dump(doc, open(out, "w"), indent=2)
print(f"\nwrote {out}")
PY
