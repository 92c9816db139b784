#!/usr/bin/env python3
"""Memory overhead benchmark: what ringvm's processes hold besides guest RAM.

For each configuration (virtio-rng; virtio-blk on a raw and on an allocated
qcow2 file on tmpfs; virtio-net on a TAP in a private namespace, root only)
the probe guest runs once idle (`probe=idle`, HLT) and once under load (the
device's own probe benchmark: rng.bench, blk.bench QD32 randread,
net.bench TX), and 1.5 s into the phase the script reads, for the main
process and for each device process (its children), /proc/PID/smaps_rollup
(Rss, Pss) and /proc/PID/smaps, whose guest-RAM mapping (the memfd, a
`/memfd:ringvm-guest-ram` line) is subtracted: the figure is the VMM's own
memory. Guest pages a process touched are shown apart (`guest_rss_kib`).

In-run reference: QEMU 7.2 + qboot with the same guest and device, its RAM
put on a memfd too (`-object memory-backend-memfd`) so it is subtracted the
same way. Firecracker's bar (≤ 5 MiB of VMM overhead, enforced in its CI)
is quoted, not measured: no Firecracker binary on these hosts.

Each configuration runs MEM_RUNS times (default 3); medians and min-max.
Usage: bench/memory.py [BUILD_DIR]. Writes bench/results/memory-<timestamp>.{json,md}.
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, threading, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy import descendants, machine_info, read  # noqa: E402

FIRECRACKER_BAR_KIB = 5 * 1024
GUEST_RAM_TAG = "memfd:"  # ringvm's "ringvm-guest-ram" and QEMU's "mem" memfds
DELAY_S = 1.5


def smaps_split(pid):
    """(rss_kib, pss_kib, guest_rss_kib, guest_pss_kib) of one process: totals from
    smaps_rollup, the guest-RAM memfd mappings summed from smaps."""
    roll = read(f"/proc/{pid}/smaps_rollup")
    sm = read(f"/proc/{pid}/smaps")
    if roll is None or sm is None:
        return None
    tot = {}
    for line in roll.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0] in ("Rss:", "Pss:"):
            tot[f[0]] = int(f[1])
    g_rss = g_pss = 0
    guest = False
    for line in sm.splitlines():
        f = line.split()
        if not f:
            continue
        if not f[0].endswith(":"):  # a mapping header: addr perms off dev inode [path]
            guest = len(f) >= 6 and f[5].startswith("/" + GUEST_RAM_TAG)
        elif guest and f[0] == "Rss:":
            g_rss += int(f[1])
        elif guest and f[0] == "Pss:":
            g_pss += int(f[1])
    return tot.get("Rss:", 0), tot.get("Pss:", 0), g_rss, g_pss


def measure(pid):
    """{process label: figures} for the VMM and its descendants."""
    out = {}
    for i, p in enumerate([pid] + descendants(pid)):
        s = smaps_split(p)
        if s is None:
            continue
        # device processes are forked without exec (same comm): number them
        label = "main" if i == 0 else ("device" if i == 1 else f"device{i}")
        out[label] = {"rss_kib": s[0] - s[2], "pss_kib": s[1] - s[3],
                      "guest_rss_kib": s[2], "rss_total_kib": s[0]}
    return out


def run_sampled(argv, cue, timeout=90):
    """Runs argv, takes measure() DELAY_S after the first line starting with cue."""
    errf = tempfile.TemporaryFile()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
    got, timer = {}, None
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    lines = []
    try:
        for raw in p.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("PROBE"):
                lines.append(line)
            if timer is None and line.startswith(cue):
                timer = threading.Timer(DELAY_S, lambda: got.update(m=measure(p.pid)))
                timer.start()
        rc = p.wait(timeout=30)
    finally:
        killer.cancel()
        if timer:
            timer.join()
    errf.seek(0)
    end = [l for l in lines if l.startswith("PROBE-END")]
    if rc != 0 or end != ["PROBE-END status=ok"] or "m" not in got:
        raise RuntimeError(f"{' '.join(argv)}\nfailed (rc={rc}, end={end}, sampled="
                           f"{'m' in got}):\n" + "\n".join(lines[-3:]) + "\n"
                           + errf.read().decode(errors="replace")[-600:])
    return got["m"]


def spread(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    runs = int(os.environ.get("MEM_RUNS", "3"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ringvm = os.path.join(build, "core", "ringvm")
    probe = os.path.join(build, "tests", "guest", "probe.elf")
    qtool = os.path.join(build, "tools", "qcow-tool", "qcow-tool")
    qemu = shutil.which("qemu-system-x86_64")
    have_qemu = bool(qemu) and os.path.exists("/usr/share/qemu/qboot.rom")
    for need in (ringvm, probe, qtool):
        if not os.path.exists(need):
            sys.exit(f"memory.py: {need} missing (build first)")
    info = machine_info(root, qemu) if have_qemu else {}
    tag = f"ringvm-bmem-{os.getpid()}"
    raw_img, q_img = f"/dev/shm/{tag}.raw", f"/dev/shm/{tag}.qcow2"
    net_ns = None
    t0 = time.monotonic()

    idle = ("probe=idle idle.secs=4 idle.tick_ms=500", "PROBE idle.tick n=1 ")
    loads = {"rng": ("probe=timer,rng.bench rngb.secs=4", "PROBE rng.bench.start"),
             "blk": ("probe=timer,blk.bench blk.rw=randread blk.qd=32 blk.secs=4",
                     "PROBE blk.bench.dev"),
             "net": ("probe=timer,net.bench net.size=1500 net.secs=4 net.phases=tx "
                     "net.ip=10.0.2.15 net.peer=10.0.2.2 net.dport=9", "PROBE net.bench.start")}

    def ringvm_argv(dev, params):
        a = [ringvm, "run", "-m", "256", "-p", params]
        if dev == "blk-raw":
            a = a[:2] + ["--no-rng", "--block", f"path={raw_img},format=raw"] + a[2:]
        elif dev == "blk-qcow2":
            a = a[:2] + ["--no-rng", "--block", f"path={q_img},format=qcow2"] + a[2:]
        elif dev == "net":
            a = (["ip", "netns", "exec", net_ns[0]] + a[:2]
                 + ["--no-rng", "--net", f"tap={net_ns[1]},mac=52:54:00:12:34:56"] + a[2:])
        return a + [probe]

    def qemu_argv(dev, params):
        a = [qemu, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc,memory-backend=mem",
             "-object", "memory-backend-memfd,id=mem,size=256M", "-m", "256", "-smp", "1",
             "-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
             "-bios", "/usr/share/qemu/qboot.rom", "-kernel", probe]
        if dev == "rng":
            a += ["-device", "virtio-rng-pci,disable-legacy=on"]
        else:
            img, fmt = (raw_img, "raw") if dev == "blk-raw" else (q_img, "qcow2")
            a += ["-drive", f"file={img},if=none,id=d0,format={fmt},aio=io_uring",
                  "-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]
        return a + ["-append", params]

    devs = ["rng", "blk-raw", "blk-qcow2"]
    if os.geteuid() == 0 and shutil.which("ip"):
        import net as netbench
        netbench.reap_stale()
        net_ns = netbench.ns_create("m")
        devs.append("net")
    else:
        print("memory.py: net skipped (needs root for a TAP namespace)", file=sys.stderr)
    samples = {}
    try:
        with open(raw_img, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(256):
                f.write(block)
        subprocess.run([qtool, "convert", "-O", "qcow2", raw_img, q_img], check=True,
                       capture_output=True)
        for i in range(runs):
            for dev in devs:
                kind = dev.split("-")[0]
                for phase, (params, cue) in (("idle", idle), ("load", loads[kind])):
                    vmms = ["ringvm"] + (["qemu"] if have_qemu and dev != "net" else [])
                    for vmm in vmms:
                        mk = ringvm_argv if vmm == "ringvm" else qemu_argv
                        m = run_sampled(mk(dev, params), cue)
                        samples.setdefault(f"{vmm}/{dev}/{phase}", []).append(m)
            print(f"memory: run {i + 1}/{runs} done ({time.monotonic() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    finally:
        for p in (raw_img, q_img):
            if os.path.exists(p):
                os.unlink(p)
        if net_ns:
            netbench.cleanup()

    # summaries: per process and the VMM total (all processes), medians over runs
    summary = {}
    for key, ms in samples.items():
        procs = sorted({p for m in ms for p in m})
        s = {p: {f: spread([m[p][f] for m in ms if p in m])
                 for f in ("rss_kib", "pss_kib", "guest_rss_kib")} for p in procs}
        s["total"] = {f: spread([sum(x[f] for x in m.values()) for m in ms])
                      for f in ("rss_kib", "pss_kib", "guest_rss_kib")}
        summary[key] = s

    def mib(s):
        return f"{s['median'] / 1024:.2f} ({s['min'] / 1024:.2f}–{s['max'] / 1024:.2f})"

    hdr = ("VMM", "device", "phase", "process", "RSS MiB excl. guest RAM", "PSS MiB excl. guest RAM",
           "guest RAM touched MiB")
    rows = []
    for key in sorted(summary, key=lambda k: (k.split("/")[1], k.split("/")[2], k.split("/")[0])):
        vmm, dev, phase = key.split("/")
        for p, s in summary[key].items():
            rows.append((vmm, dev, phase, p, mib(s["rss_kib"]), mib(s["pss_kib"]),
                         mib(s["guest_rss_kib"])))
    elapsed = time.monotonic() - t0
    head = (f"memory overhead: median (min–max) of {runs} runs, sampled {DELAY_S} s into each "
            f"phase; Firecracker's bar (not measured here): ≤ {FIRECRACKER_BAR_KIB // 1024} MiB "
            f"for the whole VMM; {elapsed:.0f} s")
    md = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    print(head)
    print("\n".join(md))
    out = {"benchmark": "memory", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "runs": runs, "elapsed_s": elapsed, "method": __doc__,
           "firecracker_bar_kib": FIRECRACKER_BAR_KIB,
           "machine": dict(info, loadavg_end=(read("/proc/loadavg") or "").split()[:3]),
           "commands": {"ringvm_example": ringvm_argv("blk-raw", loads["blk"][0]),
                        "qemu_example": qemu_argv("blk-raw", loads["blk"][0]) if have_qemu
                        else None},
           "summary": summary, "table": [dict(zip(hdr, r)) for r in rows], "raw": samples}
    d = os.path.join(root, "bench", "results")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    with open(path[:-5] + ".md", "w") as f:
        f.write(head + "\n\n" + "\n".join(md) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
