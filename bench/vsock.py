#!/usr/bin/env python3
"""virtio-vsock benchmark.

1. Device only: `bench-vsock-harness` (bench/vsock/harness_bench.c) drives the
   real (jailed) vsock device process from the host, playing the guest through
   tests/harness/vdriver: host→guest (a host client connects with
   `CONNECT <port>`, writes 64 KiB chunks), guest→host (a guest connect to
   PATH_<port>, a host reader with 64 KiB reads; the guest sends 32 KiB
   packets, half the device's 64 KiB credit) and connection setup (connect,
   CONNECT line, guest RESPONSE, "OK" read, close). The reference in the same
   run is a host-only Unix socketpair through the same writer/reader (and a
   plain connect/accept/"OK" exchange for setup). Target: harness throughput
   ≥ 0.5× the host-only pair, both directions.
2. Guest-driven (the probe guest's `vsock.bench`, with VSOCK_PROBE=1):
   probe_part() below runs bench/vsock_probe.py. Guest-measured rates are
   guest-bound on these hosts (../shared/host.md): recorded, not compared.

Each run is VSOCK_RUNS (default 3) harness invocations of VSOCK_SECS (2)
seconds per measurement; tables show medians. Writes
bench/results/vsock-<timestamp>.{json,md}. Usage: bench/vsock.py BUILD_DIR.
"""
import json, os, subprocess, sys, time

sys.dont_write_bytecode = True  # no __pycache__ in the tree for the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy import med, read  # noqa: E402

TARGET = 0.5


def harness(path, secs, sandbox):
    argv = [path, "--seconds", str(secs)] + ([] if sandbox else ["--no-sandbox"])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120 + 10 * secs)
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return argv, json.loads(r.stdout)


def probe_part(build, runs, secs):
    """Guest-driven numbers (probe `vsock.bench`, bench/vsock_probe.py) with VSOCK_PROBE=1."""
    if os.environ.get("VSOCK_PROBE") != "1":
        return None
    import vsock_probe  # noqa: E402
    return vsock_probe.run(build, runs, os.environ.get("VSOCK_NO_SANDBOX") != "1")


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = int(os.environ.get("VSOCK_RUNS", "3"))
    secs = float(os.environ.get("VSOCK_SECS", "2"))
    sandbox = os.environ.get("VSOCK_NO_SANDBOX") != "1"
    path = os.path.join(build, "bench", "vsock", "bench-vsock-harness")
    if not os.path.exists(path):
        sys.exit(f"bench/vsock.py: {path} missing: build first (ninja -C {build})")
    t_start, load0 = time.time(), (read("/proc/loadavg") or "").split()[:3]
    raw, argv = [], None
    for i in range(runs):
        argv, r = harness(path, secs, sandbox)
        raw.append(r)
        print(f"run {i + 1}/{runs}: h2g {r['h2g_mb_s']:.0f} MB/s, g2h {r['g2h_mb_s']:.0f} MB/s, "
              f"pair {r['ref_pair_mb_s']:.0f} MB/s, setup {r['setup_per_s']:.0f}/s "
              f"(pair {r['ref_setup_per_s']:.0f}/s)", flush=True)
    keys = ("h2g_mb_s", "g2h_mb_s", "ref_pair_mb_s", "h2g_ratio", "g2h_ratio", "setup_per_s",
            "ref_setup_per_s", "setup_ratio", "h2g_device_cpu_ns_per_kib",
            "g2h_device_cpu_ns_per_kib", "ref_pair_cpu_ns_per_kib")
    m = {k: med([r[k] for r in raw]) for k in keys}
    met = m["h2g_ratio"] >= TARGET and m["g2h_ratio"] >= TARGET
    md = ["| vsock, device only (medians of %d runs, %gs each, 64 KiB writes) | device | "
          "host-only pair | ratio |" % (runs, secs), "|---|---:|---:|---:|",
          f"| host → guest MB/s | {m['h2g_mb_s']:.0f} | {m['ref_pair_mb_s']:.0f} | "
          f"{m['h2g_ratio']:.2f} |",
          f"| guest → host MB/s | {m['g2h_mb_s']:.0f} | {m['ref_pair_mb_s']:.0f} | "
          f"{m['g2h_ratio']:.2f} |",
          f"| connection setup /s | {m['setup_per_s']:.0f} | {m['ref_setup_per_s']:.0f} | "
          f"{m['setup_ratio']:.2f} |",
          f"| CPU ns per KiB, host → guest (device process; pair: writer + reader) | "
          f"{m['h2g_device_cpu_ns_per_kib']:.0f} | {m['ref_pair_cpu_ns_per_kib']:.0f} | |",
          f"| CPU ns per KiB, guest → host (device process; pair: writer + reader) | "
          f"{m['g2h_device_cpu_ns_per_kib']:.0f} | {m['ref_pair_cpu_ns_per_kib']:.0f} | |", "",
          "Ratios are medians of the per-run ratios (device and pair measured in the same run).",
          f"Target (harness throughput ≥ {TARGET}× the host-only pair, both directions): "
          + ("met." if met else "MISSED.")]
    probe = probe_part(build, runs, secs)
    if probe is not None:
        md += ["", "Guest-driven (probe vsock.bench, guest-bound here): " + json.dumps(probe)]
    text = "\n".join(md)
    print(text)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = {"benchmark": "vsock", "runs": runs, "secs": secs, "sandbox": sandbox,
           "target": TARGET, "target_met": met, "build_dir": os.path.abspath(build),
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
           "duration_s": time.time() - t_start, "harness_command": argv,
           "loadavg": {"start": load0, "end": (read("/proc/loadavg") or "").split()[:3]},
           "medians": m, "harness_raw": raw, "probe": probe}
    os.makedirs(os.path.join(root, "bench", "results"), exist_ok=True)
    base = os.path.join(root, "bench", "results", f"vsock-{stamp}")
    with open(base + ".json", "w") as fh:
        json.dump(out, fh, indent=2)
    with open(base + ".md", "w") as fh:
        fh.write(f"# vsock benchmark {out['time']} (load {' '.join(load0)})\n\n"
                 f"`bench/vsock.sh {build}` VSOCK_RUNS={runs} VSOCK_SECS={secs}\n\n{text}\n")
    print(f"wrote {base}.json and {base}.md")


if __name__ == "__main__":
    main()
