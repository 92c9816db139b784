#!/usr/bin/env python3
"""virtio-blk benchmark: ringvm against QEMU 7.2 (+qboot) and host fio, measured on the host.

Guest-measured IOPS are capped by the emulated guest (~16k for any VMM, see
/work/shared/host.md), so the figures that describe ringvm are host-side:

1. Host CPU per request: CPU time of every thread of the VMM except its vCPU
   threads (ringvm: all its threads but `vcpuN`, plus every task of its
   device processes, i.e. the processes whose parent is ringvm; QEMU, run
   with `-name debug-threads=on`: every thread but `CPU 0/KVM`), summed
   between the probe's `PROBE blk.bench.dev` line (printed right after the
   disk is opened, before the first request) and its `PROBE blk.bench rw=`
   result line, divided by the requests the probe completed. Per task the
   time is sum_exec_runtime from /proc/<pid>/task/<tid>/schedstat (ns; the
   same quantity as utime+stime in .../stat, which only has 10 ms ticks); a
   10 ms background sampler keeps threads that exit inside the window
   (io-wq workers). The same sum from utime+stime of each task's
   /proc/<pid>/task/<tid>/stat (10 ms ticks) is kept as a cross-check
   (`cpu_us_per_req_stat`).
2. Device service time (ringvm `--metrics-file`: avail ring -> used ring,
   p50/p99) next to host fio's completion latency (clat p50) at QD1 on the
   same file.
3. Device-only throughput: bench-blk-harness (the jailed device process, no
   guest) against fio io_uring on the same file at the same queue depths.
4. Guest-measured IOPS and latency (probe blk.bench), for the record.
5. qcow2: a fully allocated image (qcow-tool convert of the raw file) and a
   fresh one (allocating writes), on tmpfs, against raw and QEMU's qcow2.

Storage: the same raw file on tmpfs (/dev/shm, page cache: ringvm `--block
path=F`, QEMU cache=writeback, fio --direct=0) and on the root disk with
O_DIRECT (BLK_DIRECT_DIR, /var/tmp: ringvm `direct`, QEMU cache=none, fio
--direct=1). 4 KiB randread/randwrite; every configuration BLK_RUNS times,
interleaved; medians, min-max in the JSON.

Usage: bench/blk.py [BUILD_DIR]. Environment: BLK_SIZE_MB (1024), BLK_RUNS
(3), BLK_SECS (guest bench seconds, 2), BLK_HARNESS_SECS (2), BLK_FIO_SECS
(2), BLK_QDS (1,32), BLK_HARNESS_QDS (1,32,128), BLK_QCOW2 (1; 0 skips the
qcow2 part), BLK_DIRECT (1; 0 skips the O_DIRECT part), BLK_DIRECT_DIR
(/var/tmp). Writes bench/results/blk-<timestamp>.json and .md.
"""
import json, os, platform, re, shutil, statistics, subprocess, sys, tempfile, threading, time

sys.dont_write_bytecode = True  # no __pycache__ in the tree for the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy import num, parse_kv, read, tasks  # noqa: E402  (shared with net.py)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_int(name, default):
    return int(os.environ.get(name, default))


# ---------------------------------------------------------------- CPU accounting

def children(pid):
    """Processes whose parent is pid (ringvm forks its device processes without exec)."""
    out = []
    for t in tasks(pid):
        out += [int(c) for c in (read(f"/proc/{pid}/task/{t}/children") or "").split()]
    return out


def stat_ticks(path):
    st = read(path)
    if not st:
        return None
    f = st[st.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12])  # utime + stime


def is_vcpu(vmm, comm):
    return bool(re.fullmatch(r"vcpu\d+", comm) if vmm == "ringvm"
                else re.fullmatch(r"CPU \d+/KVM", comm))


def snapshot(pid, vmm):
    """{(pid, tid): (group, ns)} of every task; group: vcpu, main (the VMM's
    own other threads) or device (ringvm's child processes)."""
    snap = {}
    procs = [(pid, "main")] + ([(c, "device") for c in children(pid)] if vmm == "ringvm" else [])
    for p, group in procs:
        for tid in tasks(p):
            comm = (read(f"/proc/{p}/task/{tid}/comm") or "").strip()
            s = read(f"/proc/{p}/task/{tid}/schedstat")
            if not s:
                continue
            g = "vcpu" if is_vcpu(vmm, comm) else group
            if vmm == "qemu" and g == "main" and comm.startswith("IO "):
                g = "iothread"
            snap[(p, int(tid))] = (g, int(s.split()[0]), comm)
    return snap


def stat_snapshot(pid, vmm):
    """{(pid, tid): utime+stime in clock ticks} of every non-vCPU task (the
    /proc/<pid>/task/<tid>/stat figure, 10 ms resolution: a cross-check)."""
    out = {}
    procs = [pid] + (children(pid) if vmm == "ringvm" else [])
    for p in procs:
        for tid in tasks(p):
            if is_vcpu(vmm, (read(f"/proc/{p}/task/{tid}/comm") or "").strip()):
                continue
            t = stat_ticks(f"/proc/{p}/task/{tid}/stat")
            if t is not None:
                out[(p, int(tid))] = t
    return out


class CpuSampler:
    def __init__(self, pid, vmm):
        self.pid, self.vmm = pid, vmm
        self.stop = threading.Event()
        self.thread = None

    def begin(self):
        self.start = snapshot(self.pid, self.vmm)
        self.stat0 = stat_snapshot(self.pid, self.vmm)
        self.last = dict(self.start)
        self.stat_last = dict(self.stat0)
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.01):
            self.last.update(snapshot(self.pid, self.vmm))
            self.stat_last.update(stat_snapshot(self.pid, self.vmm))

    def end(self):
        final = snapshot(self.pid, self.vmm)
        stat1 = stat_snapshot(self.pid, self.vmm)
        t1 = time.monotonic()
        self.stop.set()
        self.thread.join()
        self.last.update(final)
        self.stat_last.update(stat1)
        groups, comms = {}, {}
        for key, (g, ns, comm) in self.last.items():
            d = ns - self.start.get(key, (g, 0, comm))[1]
            groups[g] = groups.get(g, 0) + d
            c = re.sub(r"\d+$", "N", comm)
            comms[c] = comms.get(c, 0) + d
        stat_non_vcpu = sum(v - self.stat0.get(k, 0) for k, v in self.stat_last.items()) / CLK_TCK
        return {"window_s": t1 - self.t0,
                "cpu_ms": {g: v / 1e6 for g, v in sorted(groups.items())},
                "cpu_ms_by_comm": {c: round(v / 1e6, 3) for c, v in sorted(comms.items())},
                "stat_non_vcpu_ms": stat_non_vcpu * 1000}


# ---------------------------------------------------------------- one boot

def run_vm(argv, vmm, metrics_file=None, timeout=120):
    errf = tempfile.TemporaryFile()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
    sampler = CpuSampler(p.pid, vmm)
    cpu, lines = None, []
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    try:
        for raw in p.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("PROBE blk.bench.dev "):
                sampler.begin()
            elif line.startswith("PROBE blk.bench rw=") and sampler.thread:
                cpu = sampler.end()
            if line.startswith("PROBE"):
                lines.append(line)
        rc = p.wait(timeout=30)
    finally:
        killer.cancel()
        if sampler.thread and cpu is None:
            sampler.stop.set()
    errf.seek(0)
    err = errf.read().decode(errors="replace")
    end = [l for l in lines if l.startswith("PROBE-END")]
    res = [l for l in lines if l.startswith("PROBE blk.bench rw=")]
    if rc != 0 or end != ["PROBE-END status=ok"] or not res or cpu is None:
        raise RuntimeError(f"{' '.join(argv)}\nfailed (rc={rc}, end={end}):\n"
                           + "\n".join(lines[-4:]) + "\n" + err.strip()[-800:])
    kv = parse_kv(res[0])
    r = {k: num(kv.get(k)) for k in ("iops", "lat_mean_us", "lat_p50_us", "lat_p99_us",
                                      "requests", "irqs", "kicks", "elapsed_ms")}
    r["cpu"] = cpu
    non_vcpu_ms = sum(v for g, v in cpu["cpu_ms"].items() if g != "vcpu")
    r["cpu_us_per_req"] = non_vcpu_ms * 1000 / r["requests"]
    r["cpu_us_per_req_stat"] = cpu["stat_non_vcpu_ms"] * 1000 / r["requests"]
    r["vcpu_us_per_req"] = cpu["cpu_ms"].get("vcpu", 0) * 1000 / r["requests"]
    if metrics_file:
        with open(metrics_file) as f:
            m = json.load(f)
        d = [x for x in m["devices"] if x.get("name") == "virtio-blk"][0]
        s = d["service_ns"]
        r.update(svc_p50_us=s["p50"] / 1e3, svc_p99_us=s["p99"] / 1e3, svc_mean_us=s["mean"] / 1e3,
                 dev_requests=d["requests"], dev_notifications=d["notifications"],
                 dev_interrupts=d["interrupts"])
    return r


# ---------------------------------------------------------------- host-side tools

def run_fio(path, rw, qd, direct, secs):
    out = subprocess.run(
        ["fio", "--name=blk", f"--filename={path}", "--ioengine=io_uring", f"--rw={rw}",
         "--bs=4k", f"--iodepth={qd}", f"--direct={1 if direct else 0}", "--time_based",
         f"--runtime={secs}", "--norandommap", "--randrepeat=0", "--output-format=json"],
        capture_output=True, text=True, check=True).stdout
    j = json.loads(out[out.index("{"):])["jobs"][0]
    d = j["read" if "read" in rw else "write"]
    pct = d["clat_ns"]["percentile"]
    return {"iops": d["iops"], "clat_p50_us": pct["50.000000"] / 1e3,
            "clat_p99_us": pct["99.000000"] / 1e3, "lat_mean_us": d["lat_ns"]["mean"] / 1e3,
            "cpu_us_per_req": (j["usr_cpu"] + j["sys_cpu"]) / 100 * j["job_runtime"] * 1e3
            / max(d["total_ios"], 1),
            "pct_us": {f"{float(k):g}": v / 1e3 for k, v in pct.items()}}


def run_harness(harness, path, rws, qds, secs):
    p = subprocess.run([harness, "--file", path, "--seconds", str(secs), "--qd",
                        ",".join(map(str, qds)), "--rw", ",".join(rws)],
                       capture_output=True, text=True)
    try:
        rows = json.loads(p.stdout)
    except ValueError:
        rows = []
    out = {(r["rw"], r["qd"]): {"iops": r["iops"], "svc_p50_us": r["service_us"]["p50"],
                                "svc_p99_us": r["service_us"]["p99"],
                                "pct_us": r.get("service_pct_us", {})} for r in rows}
    if p.returncode != 0:
        out["error"] = p.stderr.strip()[-300:]
    return out


# ---------------------------------------------------------------- summaries

def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def spread(v):
    v = [x for x in v if x is not None]
    return {"median": med(v), "min": min(v), "max": max(v), "n": len(v)} if v else None


def ratio(a, b):
    return a / b if a is not None and b else None


def summarize(rs):
    """spread() of every number field of a list of result dicts; a dict field
    (a percentile distribution) becomes its per-key median."""
    out = {}
    for f in rs[0]:
        if isinstance(rs[0][f], dict):
            out[f] = {k: med([r[f].get(k) for r in rs]) for k in rs[0][f]}
        else:
            out[f] = spread([r[f] for r in rs])
    return out


def f1(v, d=1):
    return "–" if v is None else f"{v:.{d}f}"


def sp(s, d=1):
    if not s:
        return "–"
    if s["n"] == 1:
        return f1(s["median"], d)
    return f"{f1(s['median'], d)} ({f1(s['min'], d)}–{f1(s['max'], d)})"


def machine_info(root, qemu):
    cpu = "?"
    for l in (read("/proc/cpuinfo") or "").splitlines():
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
    git = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True,
                                    text=True).stdout.strip()
    qv = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()
    fv = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
    return {"host": platform.node(), "kernel": platform.release(), "cpu": cpu,
            "cpus": os.cpu_count(), "loadavg_start": (read("/proc/loadavg") or "").split()[:3],
            "qemu": qv[0] if qv else None, "fio": fv, "commit": git("rev-parse", "--short", "HEAD"),
            "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def drop_cache(path):
    """Drop the file's clean page-cache pages. An O_DIRECT write over a cached
    page cannot be done without blocking, so io_uring gets -EAGAIN and hands it
    to an io-wq worker, where writes to one regular file run one at a time (a
    freshly written 1 GiB file made ringvm's QD32 randwrite 33x slower). fio
    does the same before each job (its default --invalidate=1)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fill_file(path, mib):
    """mib MiB of non-zero data (every qcow2 cluster of a converted image is allocated)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- main

def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    size = env_int("BLK_SIZE_MB", 1024)
    runs = env_int("BLK_RUNS", 3)
    secs = env_int("BLK_SECS", 2)
    hsecs = env_int("BLK_HARNESS_SECS", 2)
    fsecs = env_int("BLK_FIO_SECS", 2)
    qds = [int(x) for x in os.environ.get("BLK_QDS", "1,32").split(",")]
    hqds = [int(x) for x in os.environ.get("BLK_HARNESS_QDS", "1,32,128").split(",")]
    do_qcow2 = env_int("BLK_QCOW2", 1)
    do_direct = env_int("BLK_DIRECT", 1)
    ddir = os.environ.get("BLK_DIRECT_DIR", "/var/tmp")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ringvm = os.path.join(build, "core", "ringvm")
    probe = os.path.join(build, "tests", "guest", "probe.elf")
    harness = os.path.join(build, "bench", "blk", "bench-blk-harness")
    qtool = os.path.join(build, "tools", "qcow-tool", "qcow-tool")
    qemu = shutil.which("qemu-system-x86_64")
    for need in (ringvm, probe, harness, qtool):
        if not os.path.exists(need):
            sys.exit(f"blk.py: {need} missing (build first)")
    if not qemu or not shutil.which("fio") or not os.path.exists("/usr/share/qemu/qboot.rom"):
        sys.exit("blk.py: needs qemu-system-x86_64, /usr/share/qemu/qboot.rom and fio")
    info = machine_info(root, qemu)
    t_start = time.monotonic()
    rws = ["randread", "randwrite"]

    tag = f"ringvm-bblk-{os.getpid()}"
    files = {"shm": f"/dev/shm/{tag}.raw"}
    if do_direct:
        files["direct"] = os.path.join(ddir, f"{tag}.raw")
    if do_qcow2:
        files["qcow2"] = f"/dev/shm/{tag}-alloc.qcow2"
        files["fresh"] = f"/dev/shm/{tag}-fresh.qcow2"
    # qcow2 images are made `size` MiB + 16 MiB virtual: bench-blk-harness picks
    # offsets below the *file* size (it has no way to read the capacity), which
    # for qcow2 is the data plus metadata; the guest bench is held to the first
    # `size` MiB (blk.span_mib) so every figure covers the same range.
    qslack = 16

    def make_fresh():
        path = files["fresh"]
        if os.path.exists(path):
            os.unlink(path)
        subprocess.run([qtool, "create", path, f"{size + qslack}M"], check=True,
                       capture_output=True)
        os.truncate(path, size << 20)  # the harness's offset range (valid: free clusters)

    def fresh_allocated_mib():
        out = subprocess.run([qtool, "check", files["fresh"]], capture_output=True,
                             text=True).stdout
        m = re.search(r"(\d+)/(\d+) = ", out)
        return int(m.group(1)) * 64 / 1024 if m else None

    try:
        print(f"blk: preparing {size} MiB files: {', '.join(files.values())}", file=sys.stderr)
        fill_file(files["shm"], size)
        if do_direct:
            shutil.copyfile(files["shm"], files["direct"])
            drop_cache(files["direct"])
        if do_qcow2:
            subprocess.run([qtool, "convert", "-O", "qcow2", files["shm"], files["qcow2"]],
                           check=True, capture_output=True)
            subprocess.run([qtool, "resize", files["qcow2"], f"+{qslack}M"], check=True,
                           capture_output=True)

        # ---- VMM configurations: (storage, rw, qd, vmm variant)
        storages = ["shm"] + (["direct"] if do_direct else []) + \
            (["qcow2", "fresh"] if do_qcow2 else [])
        variants = ["ringvm", "qemu", "qemu_iothread"]

        def vm_argv(variant, storage, rw, qd, metrics):
            path = files[storage]
            fmt = "qcow2" if storage in ("qcow2", "fresh") else "raw"
            params = (f"probe=timer,blk.bench blk.rw={rw} blk.bs=4096 blk.qd={qd} "
                      f"blk.secs={secs} blk.span_mib={size}")
            if variant == "ringvm":
                opt = f"path={path},format={fmt}" + (",direct" if storage == "direct" else "")
                return [ringvm, "run", "--no-rng", "-m", "256", "--metrics-file", metrics,
                        "--block", opt, "-p", params, probe]
            cache = "none" if storage == "direct" else "writeback"
            a = [qemu, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc", "-m", "256",
                 "-smp", "1", "-name", "probe,debug-threads=on", "-nodefaults", "-no-reboot",
                 "-display", "none", "-serial", "stdio", "-bios", "/usr/share/qemu/qboot.rom",
                 "-kernel", probe,
                 "-drive", f"file={path},if=none,id=d0,format={fmt},aio=io_uring,cache={cache}"]
            dev = "virtio-blk-pci,drive=d0,disable-legacy=on"
            if variant == "qemu_iothread":
                a += ["-object", "iothread,id=io0"]
                dev += ",iothread=io0"
            return a + ["-device", dev, "-append", params]

        combos = [(s, rw, qd) for s in storages for rw in rws for qd in qds
                  if not (s == "fresh" and rw == "randread")]
        raw = {"vm": {}, "fio": {}, "harness": {}}
        commands = {}
        metrics = os.path.join(tempfile.gettempdir(), f"{tag}-metrics.json")
        hstor = ["shm"] + (["qcow2", "fresh"] if do_qcow2 else [])
        fstor = ["shm"] + (["direct"] if do_direct else [])
        for i in range(runs):
            for (s, rw, qd) in combos:
                order = variants if i % 2 == 0 else variants[::-1]
                for v in order:
                    if s == "fresh":
                        make_fresh()
                    if s == "direct":
                        drop_cache(files["direct"])
                    argv = vm_argv(v, s, rw, qd, metrics)
                    commands.setdefault(f"{v}/{s}/{rw}/qd{qd}", " ".join(argv))
                    r = run_vm(argv, "ringvm" if v == "ringvm" else "qemu",
                               metrics if v == "ringvm" else None, timeout=secs + 90)
                    if s == "fresh":
                        r["allocated_mib_after"] = fresh_allocated_mib()
                    raw["vm"].setdefault(f"{v}/{s}/{rw}/qd{qd}", []).append(r)
            for s in fstor:
                for rw in rws:
                    for qd in sorted(set(hqds) | set(qds)):
                        r = run_fio(files[s], rw, qd, s == "direct", fsecs)
                        raw["fio"].setdefault(f"{s}/{rw}/qd{qd}", []).append(r)
            for s in hstor:
                if s == "fresh":
                    for qd in hqds:  # one fresh image per queue depth
                        make_fresh()
                        h = run_harness(harness, files[s], ["randwrite"], [qd], hsecs)
                        for k, v in h.items():
                            if k == "error":
                                raw["harness"].setdefault(f"{s}/error", []).append(v)
                            else:
                                raw["harness"].setdefault(f"{s}/{k[0]}/qd{k[1]}", []).append(v)
                    continue
                h = run_harness(harness, files[s], rws, hqds, hsecs)
                for k, v in h.items():
                    if k == "error":
                        raw["harness"].setdefault(f"{s}/error", []).append(v)
                    else:
                        raw["harness"].setdefault(f"{s}/{k[0]}/qd{k[1]}", []).append(v)
            print(f"run {i + 1}/{runs} done ({time.monotonic() - t_start:.0f} s)",
                  file=sys.stderr, flush=True)
    finally:
        for p in list(files.values()) + [os.path.join(tempfile.gettempdir(),
                                                      f"{tag}-metrics.json")]:
            try:
                os.unlink(p)
            except OSError:
                pass

    # ---- summaries
    fields_vm = ["cpu_us_per_req", "cpu_us_per_req_stat", "vcpu_us_per_req", "iops",
                 "lat_p50_us", "lat_p99_us", "svc_p50_us", "svc_p99_us", "svc_mean_us",
                 "requests", "allocated_mib_after"]
    vm = {k: {f: spread([r.get(f) for r in rs]) for f in fields_vm}
          for k, rs in raw["vm"].items()}
    for k, rs in raw["vm"].items():
        groups = sorted({g for r in rs for g in r["cpu"]["cpu_ms"]})
        vm[k]["cpu_us_per_req_by_group"] = {
            g: med([r["cpu"]["cpu_ms"].get(g, 0) * 1000 / r["requests"] for r in rs])
            for g in groups}
    fio = {k: summarize(rs) for k, rs in raw["fio"].items()}
    harn = {k: (summarize(rs) if not k.endswith("error")
                else rs) for k, rs in raw["harness"].items()}

    M = lambda d, k, f: ((d.get(k) or {}).get(f) or {}).get("median")
    S = lambda d, k, f: (d.get(k) or {}).get(f)
    names = {"shm": "raw tmpfs", "direct": "raw O_DIRECT", "qcow2": "qcow2 allocated (tmpfs)",
             "fresh": "qcow2 fresh (tmpfs)"}
    rows = []  # (figure, case, ringvm, reference, ratio, target, met)

    def met(r, op, t):
        if r is None:
            return "n/a"
        return "yes" if (r <= t if op == "<=" else r >= t) else "**no**"

    # 1. host CPU per request
    for (s, rw, qd) in combos:
        k = lambda v: f"{v}/{s}/{rw}/qd{qd}"
        rv = M(vm, k("ringvm"), "cpu_us_per_req")
        qm, qi = M(vm, k("qemu"), "cpu_us_per_req"), M(vm, k("qemu_iothread"), "cpu_us_per_req")
        best = min(x for x in (qm, qi) if x is not None) if (qm or qi) else None
        r = ratio(rv, best)
        t = 0.6 if (qd > 1 or s in ("qcow2", "fresh")) else 0.5
        rows.append(("host CPU µs/request (non-vCPU)", f"{names[s]} {rw} QD{qd}",
                     sp(S(vm, k("ringvm"), "cpu_us_per_req")),
                     f"QEMU {sp(S(vm, k('qemu'), 'cpu_us_per_req'))} / iothread "
                     f"{sp(S(vm, k('qemu_iothread'), 'cpu_us_per_req'))}",
                     f1(r, 2), f"≤ {t}× (cheaper QEMU)", met(r, "<=", t)))
    # qcow2 allocated vs raw, CPU
    if do_qcow2:
        for rw in rws:
            for qd in qds:
                a = M(vm, f"ringvm/qcow2/{rw}/qd{qd}", "cpu_us_per_req")
                b = M(vm, f"ringvm/shm/{rw}/qd{qd}", "cpu_us_per_req")
                rows.append(("host CPU µs/request, qcow2 vs raw", f"allocated qcow2 {rw} QD{qd}",
                             f1(a, 1), f"raw {f1(b, 1)}", f1(ratio(a, b), 2), "≤ 1.2×",
                             met(ratio(a, b), "<=", 1.2)))
    # 2. service time vs fio clat
    for s in ["shm", "direct"] + (["qcow2", "fresh"] if do_qcow2 else []):
        for rw in rws:
            for qd in qds:
                k = f"ringvm/{s}/{rw}/qd{qd}"
                if k not in vm:
                    continue
                fs = "shm" if s in ("qcow2", "fresh") else s
                fk = f"{fs}/{rw}/qd{qd}"
                p50 = M(vm, k, "svc_p50_us")
                fp = M(fio, fk, "clat_p50_us")
                r = ratio(p50, fp)
                tgt = qd == 1 and s in ("shm", "direct")
                rows.append(("device service µs p50 / p99 vs fio clat p50 / p99",
                             f"{names[s]} {rw} QD{qd}",
                             f"{sp(S(vm, k, 'svc_p50_us'))} / {f1(M(vm, k, 'svc_p99_us'))}",
                             f"fio {names[fs]}: {sp(S(fio, fk, 'clat_p50_us'))} / "
                             f"{f1(M(fio, fk, 'clat_p99_us'))}",
                             f1(r, 2), "p50 ≤ 1.5×" if tgt else "–",
                             met(r, "<=", 1.5) if tgt else "–"))
    # 3. device-only throughput
    for s in hstor:
        for rw in rws:
            for qd in hqds:
                hk = f"{s}/{rw}/qd{qd}"
                if s == "fresh" and rw == "randread":
                    continue
                fk = f"shm/{rw}/qd{qd}"
                h = M(harn, hk, "iops")
                f = M(fio, fk, "iops")
                if s == "shm":
                    r, ref, t = ratio(h, f), f"fio {sp(S(fio, fk, 'iops'), 0)}", 0.8
                    tgt = qd == 32
                else:
                    hr = M(harn, f"shm/{rw}/qd{qd}", "iops")
                    r, ref, t = ratio(h, hr), f"harness raw {f1(hr, 0)} (fio {f1(f, 0)})", 0.9
                    tgt = s == "qcow2"
                rows.append(("device-only IOPS (harness)", f"{names[s]} {rw} QD{qd}",
                             sp(S(harn, hk, "iops"), 0), ref, f1(r, 2),
                             (f"≥ {t}×" if tgt else "–"), met(r, ">=", t) if tgt else "–"))
    # 4. guest-measured
    for (s, rw, qd) in combos:
        k = lambda v: f"{v}/{s}/{rw}/qd{qd}"
        rv = M(vm, k("ringvm"), "iops")
        best = max(x for x in (M(vm, k("qemu"), "iops"), M(vm, k("qemu_iothread"), "iops"))
                   if x is not None)
        r = ratio(rv, best)
        rows.append(("guest IOPS / lat p50 µs (probe)", f"{names[s]} {rw} QD{qd}",
                     f"{sp(S(vm, k('ringvm'), 'iops'), 0)} / {f1(M(vm, k('ringvm'), 'lat_p50_us'), 0)}",
                     f"QEMU {f1(M(vm, k('qemu'), 'iops'), 0)} / "
                     f"{f1(M(vm, k('qemu'), 'lat_p50_us'), 0)}, iothread "
                     f"{f1(M(vm, k('qemu_iothread'), 'iops'), 0)} / "
                     f"{f1(M(vm, k('qemu_iothread'), 'lat_p50_us'), 0)}",
                     f1(r, 2), "≥ 1× (better QEMU)", met(r, ">=", 1.0)))

    hdr = ("figure", "case", "ringvm median (min–max)", "reference median (min–max)", "ratio",
           "target", "met")
    md = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    elapsed = time.monotonic() - t_start
    head = (f"virtio-blk benchmark: {size} MiB file, 4 KiB, median of {runs} runs "
            f"(guest {secs} s, harness {hsecs} s, fio {fsecs} s each), {elapsed:.0f} s total")
    print(head)
    for r in [hdr] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    if any(k.endswith("error") for k in harn):
        print("harness errors: " + "; ".join(f"{k}: {v[0]}" for k, v in harn.items()
                                             if k.endswith("error")))

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = {"benchmark": "blk", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "elapsed_s": elapsed, "build_dir": build,
           "params": {"size_mb": size, "runs": runs, "guest_secs": secs, "harness_secs": hsecs,
                      "fio_secs": fsecs, "qds": qds, "harness_qds": hqds, "qcow2": do_qcow2,
                      "direct": do_direct, "direct_dir": ddir},
           "machine": dict(info, loadavg_end=(read("/proc/loadavg") or "").split()[:3]),
           "method": __doc__, "commands": commands, "vm": vm, "fio": fio, "harness": harn,
           "table": [dict(zip(hdr, r)) for r in rows], "raw": raw}
    d = os.path.join(root, "bench", "results")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"blk-{stamp}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    with open(path[:-5] + ".md", "w") as f:
        f.write(head + "\n\n" + "\n".join(md) + "\n")
    print(f"wrote {path} and {os.path.basename(path[:-5])}.md")


if __name__ == "__main__":
    main()
