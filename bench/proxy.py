#!/usr/bin/env python3
"""Proxy and virtio-rng benchmark: ringvm vs QEMU+qboot on the same probe guest.

1. Register-read latency, guest-measured (`probe=timer,lat`): a virtio-rng
   register read that ringvm forwards to the device process (MMIO common
   config, PCI config of the function) against reads ringvm serves in its main
   process (CMOS, UART LSR, the host bridge's PCI config), and each against
   QEMU. Guest time here is mostly emulation (host.md), so the numbers that
   mean something are the differences and ratios inside one run: `net` is a
   kind's p50 minus the p50 of the probe's empty rdtsc-pair baseline (`loop`)
   in the same run (the mean is shown too, but one host hiccup moves it).
   ringvm and QEMU also run pinned to one host CPU (`_1cpu`, taskset -c 0:
   the device process shares the vCPU's CPU, no cross-CPU wake-up) and split
   (`_split`: vCPU threads on CPU 0, everything else on CPU 1, set when the
   probe prints `PROBE timer`): the two regimes the unpinned run falls into,
   depending on where the scheduler wakes the device process.
2. virtio-rng throughput (`probe=timer,rng.bench`, 64 KiB requests, 4 in
   flight, 2 s), against QEMU with its default backend (rng-builtin, a
   userspace DRBG) and with rng-random on /dev/urandom (the kernel CSPRNG,
   like ringvm's getrandom): guest-reported MB/s, and the host CPU each VMM
   spent during the benchmark window, per thread group, from /proc/<pid>/task/*/schedstat
   (ns on CPU): ringvm's vCPU threads (vcpu*), its other main-process threads
   and its device processes (children); QEMU's vCPU threads ("CPU n/KVM") and
   all its other threads.

Each configuration runs PROXY_RUNS times (default 5), interleaved; the table
shows medians (min-max in the JSON). Usage: bench/proxy.py [BUILD_DIR].
Writes bench/results/proxy-<timestamp>.json.
"""
import json, os, platform, re, shutil, statistics, subprocess, sys, threading, time

KINDS = ["loop", "pio-rtc", "pio-uart", "cfg-bridge", "cfg-virtio", "cfgdata-bridge",
         "cfgdata-virtio", "mmio-virtio"]
# (proxied kind, main-process kind it is compared with)
PAIRS = [("mmio-virtio", "pio-rtc"), ("cfgdata-virtio", "cfgdata-bridge"),
         ("cfg-virtio", "cfg-bridge")]


def parse_kv(line):
    return dict(m.groups() for m in re.finditer(r'(\w+)=("[^"]*"|\S+)', line))


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# ---- per-thread CPU time ----

def tasks(pid):
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def task_cpu_ns(pid, tid):
    s = read(f"/proc/{pid}/task/{tid}/schedstat")
    if s:
        return int(s.split()[0])
    st = read(f"/proc/{pid}/task/{tid}/stat")  # fallback: utime+stime in clock ticks
    if st:
        f = st[st.rindex(")") + 2:].split()
        return (int(f[11]) + int(f[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return None


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for t in tasks(p):
            for c in (read(f"/proc/{p}/task/{t}/children") or "").split():
                out.append(int(c))
                todo.append(int(c))
    return out


def snapshot(pid, vmm):
    """{(group, tid): ns} for every live thread of the VMM (and, for ringvm, its children)."""
    snap = {}
    for tid in tasks(pid):
        comm = (read(f"/proc/{pid}/task/{tid}/comm") or "").strip()
        if vmm == "ringvm":
            group = "vcpu" if re.fullmatch(r"vcpu\d+", comm) else "main"
        else:
            group = "vcpu" if re.fullmatch(r"CPU \d+/KVM", comm) else "main"
        ns = task_cpu_ns(pid, tid)
        if ns is not None:
            snap[(group, int(tid))] = ns
    if vmm == "ringvm":
        for child in descendants(pid):
            for tid in tasks(child):
                ns = task_cpu_ns(child, tid)
                if ns is not None:
                    snap[("device", int(tid))] = ns
    return snap


class CpuSampler:
    """Snapshots at the start and end cues; a 10 ms background sampler keeps the
    latest value of every thread so one that exits before the end cue still counts."""

    def __init__(self, pid, vmm):
        self.pid, self.vmm = pid, vmm
        self.start = self.last = None
        self.t_start = self.t_end = None
        self.stop = threading.Event()
        self.thread = None

    def begin(self):
        self.start = snapshot(self.pid, self.vmm)
        self.last = dict(self.start)
        self.t_start = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.01):
            self.last.update(snapshot(self.pid, self.vmm))

    def end(self):
        if not self.thread:
            return None
        final = snapshot(self.pid, self.vmm)
        self.t_end = time.monotonic()
        self.stop.set()
        self.thread.join()
        self.last.update(final)
        groups = {}
        for key, ns in self.last.items():
            d = ns - self.start.get(key, 0)
            groups[key[0]] = groups.get(key[0], 0) + d
        return {"window_s": self.t_end - self.t_start,
                "cpu_ms": {g: v / 1e6 for g, v in sorted(groups.items())}}


# ---- running one VMM ----

def split_affinity(pid, vmm):
    """vCPU threads on CPU 0, everything else of the VMM (ringvm: its device
    processes; QEMU: its other threads) on CPU 1: every proxied access then
    crosses CPUs, as it does whenever the scheduler finds the other CPU idle."""
    for tid in tasks(pid):
        comm = (read(f"/proc/{pid}/task/{tid}/comm") or "").strip()
        vcpu = re.fullmatch(r"vcpu\d+|CPU \d+/KVM", comm)
        if vcpu:
            os.sched_setaffinity(int(tid), {0})
        elif vmm == "qemu":
            os.sched_setaffinity(int(tid), {1})
    if vmm == "ringvm":
        for child in descendants(pid):
            for tid in tasks(child):
                os.sched_setaffinity(int(tid), {1})


def run_once(argv, vmm, params, cpu_cues=None, split=False, timeout=120):
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    sampler = CpuSampler(p.pid, vmm) if cpu_cues else None
    cpu = None
    lines = []
    deadline = time.monotonic() + timeout
    for raw in p.stdout:
        line = raw.decode(errors="replace").strip()
        if split and line.startswith("PROBE timer "):
            split_affinity(p.pid, vmm)  # before the measured test starts
        if sampler and line.startswith(cpu_cues[0]):
            sampler.begin()
        elif sampler and line.startswith(cpu_cues[1]):
            cpu = sampler.end()
        if line.startswith("PROBE"):
            lines.append(line)
        if time.monotonic() > deadline:
            p.kill()
            break
    err = p.stderr.read().decode(errors="replace")
    rc = p.wait(timeout=30)
    if sampler and sampler.thread and cpu is None:
        cpu = sampler.end()
    end = [l for l in lines if l.startswith("PROBE-END")]
    if rc != 0 or end != ["PROBE-END status=ok"]:
        raise RuntimeError(f"{vmm} {params!r} failed (rc={rc}, end={end}):\n"
                           + "\n".join(lines[-5:]) + "\n" + err.strip()[-500:])
    return lines, cpu


def lat_result(lines):
    out = {}
    for l in lines:
        if l.startswith("PROBE lat kind="):
            kv = parse_kv(l)
            if "skipped" in kv:
                continue
            out[kv["kind"]] = {k: num(kv[k]) for k in
                               ("mean_us", "p50_us", "p99_us", "min_us", "max_us", "net_us")
                               if k in kv}
    return out


def rng_result(lines, cpu):
    for l in lines:
        if l.startswith("PROBE rng.bench bytes="):
            kv = parse_kv(l)
            r = {k: num(kv[k]) for k in ("bytes", "secs", "mbps", "requests", "kicks", "irqs")}
            if cpu:
                r["cpu_ms"] = cpu["cpu_ms"]
                r["cpu_window_s"] = cpu["window_s"]
            return r
    raise RuntimeError("no rng.bench line")


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def summarize_lat(runs):
    out = {}
    for k in KINDS:
        rows = [r[k] for r in runs if k in r]
        if not rows:
            continue
        out[k] = {f: {"median": med([r.get(f) for r in rows]),
                      "min": min(r[f] for r in rows if f in r),
                      "max": max(r[f] for r in rows if f in r)}
                  for f in rows[0]}
    return out


def summarize_rng(runs):
    out = {f: {"median": med([r[f] for r in runs]), "min": min(r[f] for r in runs),
               "max": max(r[f] for r in runs)}
           for f in ("mbps", "requests", "bytes", "secs", "irqs")}
    groups = sorted({g for r in runs for g in r.get("cpu_ms", {})})
    out["cpu_ms"] = {g: med([r.get("cpu_ms", {}).get(g) for r in runs]) for g in groups}
    # host CPU per 64 KiB request and per MB, per group, median over runs
    out["cpu_us_per_request"] = {g: med([r["cpu_ms"][g] * 1000 / r["requests"] for r in runs
                                         if g in r.get("cpu_ms", {}) and r["requests"]])
                                 for g in groups}
    out["cpu_us_per_mb"] = {g: med([r["cpu_ms"][g] * 1000 / (r["bytes"] / 1e6) for r in runs
                                    if g in r.get("cpu_ms", {}) and r["bytes"]])
                            for g in groups}
    return out


def fmt(v, w=8, d=1):
    return f"{v:{w}.{d}f}" if v is not None else f"{'-':>{w}}"


def ratio(a, b):
    return a / b if a is not None and b else None


def git_out(root, *args):
    """`git -C root ARGS` output, or "" where git or the repository is missing
    (a tarball, a machine without git): a benchmark never fails for it."""
    try:
        return subprocess.run(["git", "-C", root, *args], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def machine_info(root, qemu):
    cpu = "?"
    for l in (read("/proc/cpuinfo") or "").splitlines():
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
    git = lambda *a: git_out(root, *a)
    qv = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"host": platform.node(), "kernel": platform.release(), "cpu": cpu,
            "cpus": os.cpu_count(), "loadavg_start": (read("/proc/loadavg") or "").split()[:3],
            "haltpoll_guest_halt_poll_ns":
                (read("/sys/module/haltpoll/parameters/guest_halt_poll_ns") or "").strip() or None,
            "qemu": qv[0] if qv else None, "commit": git("rev-parse", "--short", "HEAD"),
            "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    n = int(os.environ.get("PROXY_RUNS", "5"))
    lat_n = int(os.environ.get("PROXY_LAT_N", "2000"))
    rng_secs = int(os.environ.get("PROXY_RNG_SECS", "2"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ringvm = os.path.abspath(os.path.join(build, "core", "ringvm"))
    probe = os.path.abspath(os.path.join(build, "tests", "guest", "probe.elf"))
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu or not os.path.exists("/usr/share/qemu/qboot.rom"):
        sys.exit("proxy.py: needs qemu-system-x86_64 and /usr/share/qemu/qboot.rom")
    taskset = shutil.which("taskset")

    def ringvm_argv(params, pin=False):
        a = [ringvm, "run", "-m", "256", "-p", params, probe]
        return [taskset, "-c", "0"] + a if pin else a

    def qemu_argv(params, pin=False, urandom=False):
        # debug-threads=on names the vCPU threads "CPU n/KVM" (CPU accounting)
        a = [qemu, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc", "-m", "256",
             "-smp", "1", "-name", "probe,debug-threads=on", "-nodefaults", "-no-reboot",
             "-display", "none", "-serial", "stdio", "-bios", "/usr/share/qemu/qboot.rom",
             "-kernel", probe]
        if urandom:  # the kernel's CSPRNG, as ringvm's getrandom(); default: rng-builtin
            a += ["-object", "rng-random,id=rng0,filename=/dev/urandom",
                  "-device", "virtio-rng-pci,rng=rng0,disable-legacy=on"]
        else:
            a += ["-device", "virtio-rng-pci,disable-legacy=on"]
        a += ["-append", params]
        return [taskset, "-c", "0"] + a if pin else a

    def qemu_urandom_argv(params, pin=False):
        return qemu_argv(params, pin, urandom=True)

    lat_params = f"probe=timer,lat lat.n={lat_n}"
    rng_params = f"probe=timer,rng.bench rngb.secs={rng_secs}"
    # name: (argv maker, vmm, pinned to CPU 0 with taskset, split across CPUs 0/1)
    lat_cfgs = {"ringvm": (ringvm_argv, "ringvm", False, False),
                "qemu": (qemu_argv, "qemu", False, False)}
    if taskset:
        lat_cfgs["ringvm_1cpu"] = (ringvm_argv, "ringvm", True, False)
        lat_cfgs["qemu_1cpu"] = (qemu_argv, "qemu", True, False)
    if (os.cpu_count() or 1) >= 2:
        lat_cfgs["ringvm_split"] = (ringvm_argv, "ringvm", False, True)
        lat_cfgs["qemu_split"] = (qemu_argv, "qemu", False, True)
    info = machine_info(root, qemu)
    # rng: QEMU 7.2's default backend is rng-builtin (a userspace ChaCha DRBG from
    # gnutls/nettle, seeded by getrandom); qemu_urandom reads /dev/urandom instead
    rng_cfgs = {"ringvm": (ringvm_argv, "ringvm"), "qemu": (qemu_argv, "qemu"),
                "qemu_urandom": (qemu_urandom_argv, "qemu")}
    raw = {"lat": {c: [] for c in lat_cfgs}, "rng": {c: [] for c in rng_cfgs}}
    cues = ("PROBE rng.bench.start", "PROBE rng.bench ")
    for i in range(n):
        for cfg, (mk, vmm, pin, split) in lat_cfgs.items():
            lines, _ = run_once(mk(lat_params, pin), vmm, lat_params, split=split)
            raw["lat"][cfg].append(lat_result(lines))
        for cfg, (mk, vmm) in rng_cfgs.items():
            lines, cpu = run_once(mk(rng_params), vmm, rng_params, cpu_cues=cues)
            raw["rng"][cfg].append(rng_result(lines, cpu))
        print(f"run {i + 1}/{n} done", file=sys.stderr, flush=True)

    rng = {v: summarize_rng(r) for v, r in raw["rng"].items()}
    m = lambda cfg, k, f: (lat.get(cfg, {}).get(k, {}).get(f) or {}).get("median")

    # net50: a kind's p50 minus loop's p50 in the same run (robust to the odd
    # multi-millisecond outlier another process on the host causes; the mean is not)
    for c, runs in raw["lat"].items():
        for r in runs:
            base = r.get("loop", {}).get("p50_us")
            for k, v in r.items():
                if base is not None and v.get("p50_us") is not None:
                    v["net50_us"] = max(v["p50_us"] - base, 0.0)
    lat = {c: summarize_lat(r) for c, r in raw["lat"].items()}

    print(f"proxy benchmark: median of {n} runs, lat.n={lat_n}; µs as measured in the guest")
    print("every figure includes the probe's two trapped rdtsc (`loop`); "
          "net = p50 - loop's p50, same run")
    print(f"{'kind':16}{'ringvm serves it in':>20}{'ringvm mean':>13}{'p50':>7}{'p99':>7}"
          f"{'net':>7}{'qemu mean':>11}{'p50':>7}{'p99':>7}{'net':>7}{'ringvm/qemu':>13}")
    table = []
    cfgs = [c for c in ("ringvm", "qemu", "ringvm_1cpu", "qemu_1cpu", "ringvm_split",
                        "qemu_split") if c in lat]
    for k in KINDS:
        where = ("-" if k == "loop" else
                 "device process" if k.endswith("virtio") else "main process")
        row = f"{k:16}{where:>20}"
        for c, w in (("ringvm", 13), ("qemu", 11)):
            row += (fmt(m(c, k, "mean_us"), w) + fmt(m(c, k, "p50_us"), 7)
                    + fmt(m(c, k, "p99_us"), 7) + fmt(m(c, k, "net50_us"), 7))
        r = ratio(m("ringvm", k, "net50_us"), m("qemu", k, "net50_us")) if k != "loop" else None
        print(row + fmt(r, 12, 2) + ("x" if r is not None else ""))
        table.append({"kind": k, "served_by": where,
                      **{c: {f: m(c, k, f) for f in
                             ("mean_us", "p50_us", "p99_us", "net_us", "net50_us")}
                         for c in cfgs},
                      "ringvm_over_qemu_net50": r})
    print()
    print("proxied read vs main-process read, net µs (p50 - loop p50):")
    print(f"{'':36}" + "".join(f"{c:>24}" for c in cfgs))
    pair_out = []
    for a, b in PAIRS:
        row = f"  {a + ' vs ' + b:34}"
        entry = {"proxied": a, "main": b}
        for c in cfgs:
            na, nb = m(c, a, "net50_us"), m(c, b, "net50_us")
            r = ratio(na, nb)
            row += f"{fmt(na, 7)} vs{fmt(nb, 5)} ={fmt(r, 5, 2)}x"
            entry[c] = {"proxied_net50_us": na, "main_net50_us": nb, "ratio": r,
                        "extra_us": (na - nb) if na is not None and nb is not None else None}
        pair_out.append(entry)
        print(row)
    print()
    print(f"virtio-rng throughput: rng.bench 64 KiB x 4 in flight, {rng_secs} s, "
          f"median of {n} runs")
    print(f"{'':14}{'MB/s':>9}{'req/s':>9}  host CPU in the window, ms (µs per 64 KiB request)")
    non_vcpu = {}
    for name, r in rng.items():
        reqs = r["requests"]["median"] / r["secs"]["median"]
        cpu = "  ".join(f"{g} {r['cpu_ms'][g]:.0f} ({r['cpu_us_per_request'][g]:.1f})"
                        for g in r["cpu_ms"])
        print(f"{name:14}{r['mbps']['median']:9.1f}{reqs:9.0f}  {cpu}")
        non_vcpu[name] = sum(v for g, v in r["cpu_us_per_request"].items() if g != "vcpu")
    mb_ratio = {q: ratio(rng["ringvm"]["mbps"]["median"], rng[q]["mbps"]["median"])
                for q in rng if q != "ringvm"}
    print("ringvm MB/s over " + ", ".join(f"{q} {v:.2f}x" for q, v in mb_ratio.items())
          + "; host CPU per request outside the vCPU threads: "
          + ", ".join(f"{q} {v:.1f} µs" for q, v in non_vcpu.items()))

    out = {"benchmark": "proxy", "runs": n, "build_dir": os.path.abspath(build),
           "lat_n": lat_n, "rng_secs": rng_secs,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "commands": {**{f"lat_{c}": mk(lat_params, pin) + (["(split affinity)"] if sp else [])
                           for c, (mk, _, pin, sp) in lat_cfgs.items()},
                        **{f"rng_{c}": mk(rng_params) for c, (mk, _) in rng_cfgs.items()}},
           "machine": dict(info, loadavg_end=(read("/proc/loadavg") or "").split()[:3]),
           "lat": lat, "lat_table": table, "proxied_vs_main": pair_out,
           "rng": rng, "rng_ringvm_over_mbps": mb_ratio,
           "rng_cpu_us_per_request_non_vcpu": non_vcpu, "raw": raw}
    os.makedirs(os.path.join(root, "bench", "results"), exist_ok=True)
    path = os.path.join(root, "bench", "results",
                        f"proxy-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
