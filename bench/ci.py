#!/usr/bin/env python3
"""`make bench-ci`: the short benchmark gate. Ratios, not absolute times.

Every ratio below is oriented so that higher is better, and each side of it is
measured in the same run on the same file, interleaved, CI_REPS times
(default 5). The gate uses the median for costs (CPU, service time, net) and
the best run of each side for throughput and boot time (see group_harness and
group_boot: on a loaded 2-CPU host those are what repeats). bench/baseline.json keeps, per ratio, a
floor (the median of calibration runs on this kind of machine) and a
tolerance: a ratio fails when it is below floor × (1 − tolerance). A failing
ratio is measured once more (its whole group, CI_REPS times again) and the
better of the two medians counts, so one burst of load from elsewhere does
not fail CI while a real regression, which shows in both, still does.

  blk_cpu_qemu_over_ringvm   host CPU per request, all threads but the vCPU,
                             probe blk.bench 4 KiB randread QD32, raw file on
                             tmpfs: QEMU 7.2 (aio=io_uring) / ringvm
  blk_harness_over_fio       device-only IOPS (bench-blk-harness, jailed device,
                             no guest) / fio io_uring, randread QD32, same file
                             (best of CI_REPS runs each)
  blk_svc_fio_over_ringvm    fio clat p50 / device service time p50 (harness,
                             avail ring -> used ring), randread QD1
  qcow2_over_raw             harness IOPS on an allocated qcow2 / on the raw
                             file, randread QD32 (best of CI_REPS runs each)
  boot_qemu_over_ringvm      spawn -> first probe line, QEMU+qboot / ringvm
                             (fastest of CI_REPS spawns each, see group_boot)
  net_device_over_host_loop  bench-net-harness (jailed net device, no guest)
                             pps / a plain TAP readv/writev loop, geometric
                             mean of TX and RX at 64 and 1500 B (root only)

Usage: bench/ci.py BUILD_DIR [--calibrate]. --calibrate prints the medians in
baseline.json's form and never fails. Environment: CI_REPS (5), CI_SECS (2,
guest bench), CI_HSECS (1, harness and fio), CI_SIZE_MB (256).
Writes bench/results/ci-<timestamp>.json. Exit status 1 when a ratio fails.
"""
import json, math, os, shutil, statistics, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blk import fill_file, machine_info, run_fio, run_harness, run_vm  # noqa: E402
from boot import run_once as boot_once  # noqa: E402
from net import run_harness as net_harness  # noqa: E402
from proxy import read  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


class Ctx:
    def __init__(self, build):
        self.build = build
        self.ringvm = os.path.join(build, "core", "ringvm")
        self.probe = os.path.join(build, "tests", "guest", "probe.elf")
        self.harness = os.path.join(build, "bench", "blk", "bench-blk-harness")
        self.net_harness = os.path.join(build, "bench", "net", "bench-net-harness")
        self.qtool = os.path.join(build, "tools", "qcow-tool", "qcow-tool")
        self.qemu = shutil.which("qemu-system-x86_64")
        self.reps = int(os.environ.get("CI_REPS", "5"))
        self.secs = int(os.environ.get("CI_SECS", "2"))
        self.hsecs = float(os.environ.get("CI_HSECS", "1"))
        self.size = int(os.environ.get("CI_SIZE_MB", "256"))
        tag = f"ringvm-bci-{os.getpid()}"
        self.raw = f"/dev/shm/{tag}.raw"
        self.qcow2 = f"/dev/shm/{tag}.qcow2"
        self.metrics = os.path.join(tempfile.gettempdir(), f"{tag}-metrics.json")

    def qemu_base(self):
        return [self.qemu, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc",
                "-m", "256", "-smp", "1", "-nodefaults", "-no-reboot", "-display", "none",
                "-serial", "stdio", "-bios", "/usr/share/qemu/qboot.rom", "-kernel", self.probe]


# ---- measurement groups: each returns {ratio name: (value, {detail})} and its samples

def group_cpu(c):
    params = (f"probe=timer,blk.bench blk.rw=randread blk.bs=4096 blk.qd=32 "
              f"blk.secs={c.secs}")
    rv = [c.ringvm, "run", "--no-rng", "-m", "256", "--metrics-file", c.metrics,
          "--block", f"path={c.raw},format=raw", "-p", params, c.probe]
    qv = c.qemu_base()[:-2] + ["-name", "probe,debug-threads=on", "-kernel", c.probe,
                               "-drive", f"file={c.raw},if=none,id=d0,format=raw,"
                               "aio=io_uring,cache=writeback",
                               "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
                               "-append", params]
    s = {"ringvm": [], "qemu": []}
    for i in range(c.reps):
        for v in (("ringvm", "qemu") if i % 2 == 0 else ("qemu", "ringvm")):
            r = run_vm(rv if v == "ringvm" else qv, v, c.metrics if v == "ringvm" else None,
                       timeout=c.secs + 90)
            s[v].append(r["cpu_us_per_req"])
    r, q = med(s["ringvm"]), med(s["qemu"])
    return {"blk_cpu_qemu_over_ringvm": (q / r, {"ringvm_cpu_us_per_req": r,
                                                 "qemu_cpu_us_per_req": q})}, s


def group_harness(c):
    s = {"harness_qd32": [], "fio_qd32": [], "svc_qd1": [], "fio_clat_qd1": [],
         "qcow2_qd32": []}
    for i in range(c.reps):
        h = run_harness(c.harness, c.raw, ["randread"], [1, 32], c.hsecs)
        q = run_harness(c.harness, c.qcow2, ["randread"], [32], c.hsecs)
        for x in (h, q):
            if "error" in x:
                raise RuntimeError(f"bench-blk-harness: {x['error']}")
        f32 = run_fio(c.raw, "randread", 32, False, c.hsecs)
        f1 = run_fio(c.raw, "randread", 1, False, c.hsecs)
        s["harness_qd32"].append(h[("randread", 32)]["iops"])
        s["svc_qd1"].append(h[("randread", 1)]["svc_p50_us"])
        s["qcow2_qd32"].append(q[("randread", 32)]["iops"])
        s["fio_qd32"].append(f32["iops"])
        s["fio_clat_qd1"].append(f1["clat_p50_us"])
    m = {k: med(v) for k, v in s.items()}
    # Throughput: the best of the interleaved runs on each side, not the median.
    # Under load the harness (two processes waking each other) swings 65-440 k
    # IOPS between one-second runs here, bimodally, so the ratio of medians
    # went 0.47-4.9 on one unchanged tree; the ratio of bests stayed 0.86-3.7
    # (qcow2/raw: 1.0-1.8 against 0.75-2.2), and a slower device lowers it
    # just the same (5 us of CPU per request: 0.31).
    b = {k: max(v) for k, v in s.items()}
    return {"blk_harness_over_fio": (b["harness_qd32"] / b["fio_qd32"],
                                     {"harness_iops_best": b["harness_qd32"],
                                      "fio_iops_best": b["fio_qd32"],
                                      "harness_iops_median": m["harness_qd32"],
                                      "fio_iops_median": m["fio_qd32"]}),
            "blk_svc_fio_over_ringvm": (m["fio_clat_qd1"] / m["svc_qd1"],
                                        {"ringvm_svc_p50_us": m["svc_qd1"],
                                         "fio_clat_p50_us": m["fio_clat_qd1"]}),
            "qcow2_over_raw": (b["qcow2_qd32"] / b["harness_qd32"],
                               {"qcow2_iops_best": b["qcow2_qd32"],
                                "raw_iops_best": b["harness_qd32"]})
            }, s


def group_boot(c):
    rv = [c.ringvm, "run", "-m", "256", "-p", "probe=hello", c.probe]
    qv = c.qemu_base() + ["-append", "probe=hello"]
    s = {"ringvm": [], "qemu": []}
    for _ in range(c.reps):
        s["ringvm"].append(boot_once(rv)["first_line_ms"])
        s["qemu"].append(boot_once(qv)["first_line_ms"])
    # the fastest of the spawns, not the median: a boot is a fixed amount of work
    # that load only delays (ringvm forks its device processes, so under a load
    # of 20 on 2 CPUs its median moved 15 -> 170 ms while QEMU's barely did)
    r, q = min(s["ringvm"]), min(s["qemu"])
    return {"boot_qemu_over_ringvm": (q / r, {"ringvm_first_line_ms_min": r,
                                              "qemu_first_line_ms_min": q})}, s


def group_net(c):
    # geometric mean over TX/RX x 64/1500 B of device pps / plain TAP loop pps:
    # each of the four swings 0.6-2x from run to run with the load, their
    # product much less (the host loop and the device meet the same load)
    s = {"geomean": [], "by_case": []}
    for _ in range(c.reps):
        h = net_harness(c.net_harness, c.hsecs, timeout=120 + 16 * c.hsecs)
        r = {k: h[f"device/{k}"]["pps"] / h[f"host-loop/{k}"]["pps"]
             for k in ("tx/64", "rx/64", "tx/1500", "rx/1500")}
        s["by_case"].append(r)
        s["geomean"].append(math.prod(r.values()) ** (1 / len(r)))
    return {"net_device_over_host_loop": (med(s["geomean"]), {
        f"{k.replace('/', '_')}": med([x[k] for x in s["by_case"]])
        for k in s["by_case"][0]})}, s


GROUPS = {"cpu": group_cpu, "harness": group_harness, "boot": group_boot}
if os.geteuid() == 0:  # TAPs need root; CI runs as root
    GROUPS["net"] = group_net
GROUP_OF = {"blk_cpu_qemu_over_ringvm": "cpu", "blk_harness_over_fio": "harness",
            "blk_svc_fio_over_ringvm": "harness", "qcow2_over_raw": "harness",
            "boot_qemu_over_ringvm": "boot", "net_device_over_host_loop": "net"}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    calibrate = "--calibrate" in sys.argv
    c = Ctx(os.path.abspath(args[0] if args else "build"))
    for need in (c.ringvm, c.probe, c.harness, c.qtool):
        if not os.path.exists(need):
            sys.exit(f"bench-ci: {need} missing (build first)")
    if not c.qemu or not shutil.which("fio") or not os.path.exists("/usr/share/qemu/qboot.rom"):
        sys.exit("bench-ci: needs qemu-system-x86_64, /usr/share/qemu/qboot.rom and fio "
                 "(tools/install-deps)")
    with open(os.path.join(HERE, "baseline.json")) as f:
        base = json.load(f)
    root = os.path.dirname(HERE)
    info = machine_info(root, c.qemu)
    t0 = time.monotonic()
    results, samples, retried = {}, {}, {}
    try:
        fill_file(c.raw, c.size)
        subprocess.run([c.qtool, "convert", "-O", "qcow2", c.raw, c.qcow2], check=True,
                       capture_output=True)
        # the harness picks offsets below the *file* size, which for qcow2 includes
        # its metadata: grow the virtual disk past it (as blk.py does)
        subprocess.run([c.qtool, "resize", c.qcow2, "+16M"], check=True, capture_output=True)
        for g, fn in GROUPS.items():
            r, s = fn(c)
            results.update(r)
            samples[g] = [s]
            print(f"bench-ci: {g} done ({time.monotonic() - t0:.0f} s, load "
                  f"{' '.join((read('/proc/loadavg') or '').split()[:3])})", file=sys.stderr,
                  flush=True)

        def failing():
            out = []
            for name, (v, _) in results.items():
                e = base["ratios"].get(name)
                if e and v < e["floor"] * (1 - e["tolerance"]):
                    out.append(name)
            return out

        if not calibrate:
            for g in sorted({GROUP_OF[n] for n in failing()}):
                print(f"bench-ci: {g} below its floor, measuring it once more", file=sys.stderr,
                      flush=True)
                r, s = GROUPS[g](c)
                samples[g].append(s)
                for name, (v, d) in r.items():
                    retried[name] = {"first": results[name][0], "second": v}
                    if v > results[name][0]:
                        results[name] = (v, d)
    finally:
        for p in (c.raw, c.qcow2, c.metrics):
            if os.path.exists(p):
                os.unlink(p)

    elapsed = time.monotonic() - t0
    load = (read("/proc/loadavg") or "").split()[:3]
    rows, failed = [], []
    for name, (v, d) in results.items():
        e = base["ratios"].get(name)
        limit = e["floor"] * (1 - e["tolerance"]) if e else None
        ok = limit is None or v >= limit
        if not ok:
            failed.append(name)
        rows.append({"ratio": name, "value": v, "floor": e and e["floor"],
                     "tolerance": e and e["tolerance"], "limit": limit,
                     "status": "pass" if ok else "FAIL",
                     "retried": retried.get(name), "detail": d})
    print(f"bench-ci: {c.reps} reps, {elapsed:.0f} s, load average "
          f"{' '.join(info['loadavg_start'])} -> {' '.join(load)}, commit {info['commit']}"
          f"{' (dirty)' if info['worktree_dirty'] else ''}")
    print(f"{'ratio (higher is better)':28}{'value':>8}{'floor':>8}{'tol':>6}{'limit':>8}  "
          f"status  detail")
    for r in rows:
        det = ", ".join(f"{k}={v:.2f}" for k, v in r["detail"].items())
        if r["retried"]:
            det += f"; re-measured: {r['retried']['first']:.2f} then {r['retried']['second']:.2f}"
        fl = "-" if r["floor"] is None else f"{r['floor']:.2f}"
        tl = "-" if r["tolerance"] is None else f"{r['tolerance']:.2f}"
        li = "-" if r["limit"] is None else f"{r['limit']:.2f}"
        print(f"{r['ratio']:28}{r['value']:8.2f}{fl:>8}{tl:>6}{li:>8}  {r['status']:6}  {det}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = {"benchmark": "ci", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "elapsed_s": elapsed, "calibrate": calibrate,
           "params": {"reps": c.reps, "guest_secs": c.secs, "harness_secs": c.hsecs,
                      "size_mb": c.size},
           "machine": dict(info, loadavg_end=load), "baseline": base, "rows": rows,
           "passed": not failed, "samples": samples}
    d = os.path.join(root, "bench", "results")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"ci-{stamp}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {path}")
    if calibrate:
        print(json.dumps({n: round(v, 3) for n, (v, _) in results.items()}))
        return 0
    if failed:
        print(f"bench-ci: FAILED: {', '.join(failed)} below floor × (1 − tolerance)")
        return 1
    print("bench-ci: all ratios at or above their limits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
