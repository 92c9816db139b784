#!/usr/bin/env python3
"""Rebuild what the probe's blk.fill test wrote, in a raw mirror image.

blk.fill (tests/guest/test_blk_fill.c) prints

    PROBE blk.fill start ... pattern_base=0x.. pattern_step=0x.. pattern_bytes=N capacity=SECTORS
    PROBE blk.fill.op n=N kind=write|discard|zeroes sector=S len=BYTES tag=0x.. [unmap=0|1] status=ok
    ...
    PROBE blk.fill ops=N writes=N discards=N zeroes=N ... result=ok

A write stores the first `len` bytes of the pattern buffer at `sector`,
whose 8-byte little-endian word i is pattern_base + i * pattern_step
(mod 2^64), with word 0 replaced by the operation's tag. write-zeroes
zeroes the range. A discarded range may read back as its old data or as
zeros (virtio leaves a discarded range's content to the device): the
mirror keeps the old data there, and --compare accepts either, sector by
sector (each 512-byte sector all old data or all zeros), for sectors
discarded and not written since.

usage: blk_mirror.py [--base IMG] --out MIRROR [--compare IMAGE] LOG

  LOG        the probe's output (a file, or - for stdin)
  --base     the image before blk.fill ran (default: zeros)
  --out      the mirror to write (a raw image of the disk's capacity)
  --compare  compare IMAGE (raw; convert a qcow2 with `qemu-img convert
             -O raw` first) with the mirror

Exit status: 0 when the image matches (or nothing to compare), 1 when it
does not, 2 when the log is incomplete or malformed.
"""

import argparse
import mmap
import os
import re
import shutil
import struct
import sys

SECTOR = 512
M64 = (1 << 64) - 1
CHUNK = 1 << 20

TOKEN = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def fields(line):
    """The key=value pairs of a PROBE line (values unquoted naively)."""
    out = {}
    for k, v in TOKEN.findall(line):
        if v.startswith('"'):
            v = v[1:-1]
        out[k] = v
    return out


def num(f, key, line):
    try:
        return int(f[key], 0)
    except (KeyError, ValueError):
        raise SystemExit(f"blk_mirror: no numeric {key}= in: {line}") from None


def parse(log):
    start, ops, summary = None, [], None
    for raw in log.splitlines():
        line = raw.strip()
        if line.startswith("PROBE blk.fill.op "):
            ops.append((line, fields(line)))
        elif line.startswith("PROBE blk.fill "):
            f = fields(line)
            if "pattern_base" in f:
                start = (line, f)
            elif "ops" in f:
                summary = (line, f)
    if not start:
        raise SystemExit("blk_mirror: no `PROBE blk.fill start` line")
    if not summary:
        raise SystemExit("blk_mirror: no `PROBE blk.fill ops=...` summary (run cut short?)")
    if summary[1].get("result") != "ok":
        raise SystemExit(f"blk_mirror: blk.fill did not succeed: {summary[0]}")
    if num(summary[1], "ops", summary[0]) != len(ops):
        raise SystemExit(f"blk_mirror: {len(ops)} op lines, the summary says {summary[0]}")
    return start, ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log")
    ap.add_argument("--base")
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare")
    a = ap.parse_args()

    text = sys.stdin.read() if a.log == "-" else open(a.log, encoding="utf-8", errors="replace").read()
    try:
        (sline, s), ops = parse(text)
        base, step = num(s, "pattern_base", sline), num(s, "pattern_step", sline)
        pbytes, sectors = num(s, "pattern_bytes", sline), num(s, "capacity", sline)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    size = sectors * SECTOR
    words = pbytes // 8
    pattern = struct.pack(f"<{words}Q", *(((base + i * step) & M64) for i in range(words)))

    if a.base:
        if os.path.getsize(a.base) != size:
            print(f"blk_mirror: {a.base} is not {size} bytes", file=sys.stderr)
            return 2
        shutil.copyfile(a.base, a.out)
    else:
        with open(a.out, "wb") as f:
            f.truncate(size)

    discarded = bytearray(sectors)
    counts = {"write": 0, "discard": 0, "zeroes": 0}
    with open(a.out, "r+b") as f, mmap.mmap(f.fileno(), size) as m:
        for n, (line, o) in enumerate(ops):
            try:
                if num(o, "n", line) != n:
                    raise SystemExit(f"blk_mirror: operation {n} out of order: {line}")
                if o.get("status") != "ok":
                    raise SystemExit(f"blk_mirror: operation failed: {line}")
                kind, sector, length = o.get("kind"), num(o, "sector", line), num(o, "len", line)
                if length <= 0 or length % SECTOR or sector * SECTOR + length > size:
                    raise SystemExit(f"blk_mirror: bad range: {line}")
                off, ns = sector * SECTOR, length // SECTOR
                if kind == "write":
                    if length > pbytes:
                        raise SystemExit(f"blk_mirror: write longer than the pattern: {line}")
                    m[off:off + length] = pattern[:length]
                    m[off:off + 8] = struct.pack("<Q", num(o, "tag", line) & M64)
                    discarded[sector:sector + ns] = bytes(ns)
                elif kind == "zeroes":
                    m[off:off + length] = bytes(length)
                    discarded[sector:sector + ns] = bytes(ns)
                elif kind == "discard":
                    discarded[sector:sector + ns] = b"\x01" * ns
                else:
                    raise SystemExit(f"blk_mirror: unknown kind: {line}")
                counts[kind] += 1
            except SystemExit as e:
                print(e, file=sys.stderr)
                return 2

        print(f"blk_mirror: {len(ops)} operations ({counts['write']} writes, "
              f"{counts['discard']} discards, {counts['zeroes']} write-zeroes) -> {a.out}")
        if not a.compare:
            return 0
        if os.path.getsize(a.compare) != size:
            print(f"blk_mirror: {a.compare} is {os.path.getsize(a.compare)} bytes, "
                  f"the disk has {size}")
            return 1
        bad, first, zd = 0, None, 0
        zero = bytes(SECTOR)
        with open(a.compare, "rb") as g, mmap.mmap(g.fileno(), size, prot=mmap.PROT_READ) as img:
            for off in range(0, size, CHUNK):
                end = min(off + CHUNK, size)
                if img[off:end] == m[off:end]:
                    continue
                for so in range(off, end, SECTOR):
                    x = img[so:so + SECTOR]
                    if x == m[so:so + SECTOR]:
                        continue
                    s_no = so // SECTOR
                    if discarded[s_no] and x == zero:
                        zd += 1
                        continue
                    bad += 1
                    if first is None:
                        first = s_no
        if bad:
            print(f"blk_mirror: mismatch: {bad} sectors of {a.compare} differ from the mirror, "
                  f"the first is sector {first}")
            return 1
        print(f"blk_mirror: match ({zd} discarded sectors read as zeros)")
        return 0


if __name__ == "__main__":
    sys.exit(main())
