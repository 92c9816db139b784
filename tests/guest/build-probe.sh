#!/bin/sh
# Links the probe guest, then refuses it if objdump finds an instruction the
# PVM emulator cannot run (SSE/AVX registers, cmpxchg16b, xgetbv, XSAVE and
# friends): such a guest would stop with KVM_EXIT_INTERNAL_ERROR on these hosts.
# usage: build-probe.sh OUTPUT OBJDUMP CC [CC ARGS...]
set -eu
out=$1
objdump=$2
shift 2
"$@" -o "$out.tmp"
bad=$("$objdump" -d --no-show-raw-insn "$out.tmp" |
	grep -Ei '%[xyz]mm|%k[0-7]|cmpxchg16b|xgetbv|xsetbv|xsave|xrstor|fxsave|fxrstor|[lv]dmxcsr|stmxcsr|vzero|endbr' || true)
if [ -n "$bad" ]; then
	echo "build-probe.sh: forbidden instructions in the probe guest:" >&2
	echo "$bad" >&2
	rm -f "$out.tmp"
	exit 1
fi
mv "$out.tmp" "$out"
