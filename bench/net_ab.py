#!/usr/bin/env python3
"""A/B of ringvm builds on the virtio-net guest benchmark, ringvm only (no QEMU).

Usage (root): bench/net_ab.py RUNS SIZE BUILD_A BUILD_B [...]
Boots the probe's net.bench (same parameters as bench/net.py) under each
build in turn, alternating the order every run, in one private network
namespace, and prints host CPU µs per packet of the non-vCPU threads (main
process + device processes) for TX and RX, per run and as median (range).
For comparing two builds of the device on a noisy machine; bench/net.py is
the comparison against QEMU. Environment: NET_SECS (2), NET_BACKLOG (256).
"""
import atexit, os, signal, statistics, sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import net  # noqa: E402


def main():
    if len(sys.argv) < 5 or os.geteuid() != 0:
        sys.exit(__doc__)
    n, size, builds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    secs = int(os.environ.get("NET_SECS", "2"))
    backlog = int(os.environ.get("NET_BACKLOG", "256"))
    atexit.register(net.cleanup)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, net.on_signal)
    net.reap_stale()
    ns, tap = net.ns_create("r")

    def argv(b):
        p = (f"probe=timer,net.bench net.size={size} net.secs={secs} net.phases=tx,rx "
             f"net.ip={net.GUEST_IP} net.peer={net.HOST_IP} net.dport={net.DPORT}")
        return [os.path.abspath(os.path.join(b, "core", "ringvm")), "run", "-m", "256", "-p", p,
                "--net", f"tap={tap},mac={net.GUEST_MAC}",
                os.path.abspath(os.path.join(b, "tests", "guest", "probe.elf"))]

    res = {b: {"tx": [], "rx": []} for b in builds}
    for i in range(n):
        for b in (builds if i % 2 == 0 else builds[::-1]):
            r = net.run_once(argv(b), "ringvm", ns, tap, size, backlog, timeout=60 + 2 * secs)
            for d in ("tx", "rx"):
                res[b][d].append(r[d]["cpu_us_per_pkt"])
            print(f"{b} run {i + 1}: " + ", ".join(
                f"{d} {r[d]['cpu_us_per_pkt']:.3f} µs/pkt ({r[d]['frames']} frames, "
                f"{r[d]['kicks']} kicks, {r[d]['irqs']} irqs)" for d in ("tx", "rx")), flush=True)
    for b in builds:
        for d in ("tx", "rx"):
            v = res[b][d]
            print(f"{b} {size} B {d}: median {statistics.median(v):.3f} "
                  f"({min(v):.3f}-{max(v):.3f}) µs/pkt, {len(v)} runs")


if __name__ == "__main__":
    main()
