#!/usr/bin/env python3
"""virtio-net benchmark: ringvm vs QEMU (userspace virtio-net, vhost=off) on the same probe.

1. Guest traffic (`probe=timer,net.bench net.size=S net.secs=T net.phases=tx,rx`,
   tests/guest/test_net_bench.c) for 64- and 1500-byte frames, each VMM in its
   own private network namespace with one TAP (10.0.2.2/24 on the host side,
   the guest 10.0.2.15), ringvm with `--net tap=..,mac=..` and QEMU 7.2 + qboot
   with `-netdev tap,ifname=..,script=no,downscript=no,vhost=off -device
   virtio-net-pci,netdev=n0,disable-legacy=on` (`-name debug-threads=on`).
   TX: the guest blasts UDP at 10.0.2.2:9, a socket in the namespace takes it.
   RX: on the guest's "rx-start" datagram a host thread blasts UDP at
   10.0.2.15:5001 until "rx-end", paced from the TAP's own counters (it keeps
   at most NET_BACKLOG frames queued in the TAP, so the device always finds
   work and the host does not burn a CPU on frames the TAP would drop).
   Packets are the probe's counters (TX frames sent, RX frames received); the
   TAP's counters (/proc/<vmm>/net/dev = /sys/class/net/TAP/statistics in the
   namespace) are kept as a cross-check.
   Guest-measured rates are guest-bound on these hosts (host.md): recorded,
   not compared. What is compared: host CPU per packet of every VMM thread
   except the vCPU threads, from /proc/<pid>/task/*/schedstat, over the
   phase's window (TX: `PROBE net.bench.start` .. `PROBE net.bench.tx`; RX:
   `PROBE net.bench.tx` .. `PROBE net.bench.rx`). ringvm: its main-process
   threads except vcpuN, plus its device processes (children forked without
   exec; the net device is the one holding /dev/net/tun). QEMU: every thread
   but "CPU n/KVM". Target: ringvm ≤ 0.6× QEMU.
2. Device only: `bench-net-harness` (bench/net/harness_bench.c) drives the
   jailed net device process from the host without a guest, next to a plain
   TAP readv/writev loop.

Each configuration runs NET_RUNS times (default 3), interleaved (the VMM that
goes first alternates); tables show medians. Usage: bench/net.py BUILD_DIR
(root). Environment: NET_RUNS (3), NET_SECS (2, per phase), NET_HARNESS_SECS
(2), NET_BACKLOG (256), NET_SIZES (64,1500), NET_NO_HARNESS=1 to skip part 2.
Writes bench/results/net-<timestamp>.{json,md}.
"""
import atexit, ctypes, json, os, re, select, shutil, signal, socket, subprocess, sys
import threading, time

sys.dont_write_bytecode = True  # no __pycache__ in the tree for the import below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy import descendants, machine_info, med, parse_kv, read, task_cpu_ns, tasks  # noqa: E402

HOST_IP, GUEST_IP, GUEST_MAC = "10.0.2.2", "10.0.2.15", "52:54:00:12:34:56"
DPORT, BLAST_PORT = 9, 5001
TARGET = 0.6
CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33  # Linux; the socket module does not export it
NS_PREFIX = "ringvm-bnet-"

# ---- namespaces (cleaned up on every exit path we can see) ----

LIVE_NS = []
LIVE_PROCS = []


def sh(*argv, check=True):
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r


def ns_create(tag):
    pid = os.getpid()
    ns = f"{NS_PREFIX}{pid}-{tag}"
    tap = f"rvbn{pid % 1000000}{tag}"
    sh("ip", "netns", "add", ns)
    LIVE_NS.append(ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
    sh("ip", "-n", ns, "addr", "add", f"{HOST_IP}/24", "dev", tap)
    sh("ip", "-n", ns, "link", "set", tap, "up")
    return ns, tap


def cleanup():
    for p in LIVE_PROCS:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    LIVE_PROCS.clear()
    while LIVE_NS:
        ns = LIVE_NS.pop()
        sh("ip", "netns", "del", ns, check=False)  # deletes the TAP in it too


def reap_stale():
    """Namespaces a killed earlier run (SIGKILL) left behind."""
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return
    for n in names:
        m = re.fullmatch(re.escape(NS_PREFIX) + r"(\d+)-\w+", n)
        if m and int(m.group(1)) != os.getpid() and not os.path.exists(f"/proc/{m.group(1)}"):
            sh("ip", "netns", "del", n, check=False)


def on_signal(sig, _frame):
    raise SystemExit(128 + sig)


_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(ns):
    """Moves the calling thread (only it) into namespace ns."""
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {ns}: {os.strerror(e)}")
    finally:
        os.close(fd)


def tap_counters(vmm_pid, tap):
    """The TAP's counters as seen from inside the VMM's namespace (/proc/<pid>/net/dev):
    rx = frames the VMM wrote into the TAP, tx = frames the VMM read out of it."""
    for line in (read(f"/proc/{vmm_pid}/net/dev") or "").splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == tap:
            f = [int(x) for x in rest.split()]
            return {"rx_packets": f[1], "rx_dropped": f[3], "tx_packets": f[9],
                    "tx_dropped": f[11]}
    return None


# ---- the host end of net.bench, in the namespace ----

class Peer(threading.Thread):
    """Sink on HOST_IP:DPORT (counts the TX phase, watches for the markers) and,
    between the guest's rx-start and rx-end, the blaster."""

    def __init__(self, ns, tap, payload, backlog):
        super().__init__(daemon=True)
        self.ns, self.tap, self.payload, self.backlog = ns, tap, payload, backlog
        self.vmm_pid = None
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error = None
        self.tx_datagrams = self.blasted = self.send_errors = 0
        self.saw_start = self.saw_end = False

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the caller
            self.error = repr(e)
            self.ready.set()

    def _consumed(self):
        c = tap_counters(self.vmm_pid, self.tap) if self.vmm_pid else None
        return c["tx_packets"] + c["tx_dropped"] if c else None

    def _run(self):
        enter_netns(self.ns)  # this thread only; it never leaves
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        sink.bind((HOST_IP, DPORT))
        sink.setblocking(False)
        blast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blast.setblocking(False)
        blast.connect((GUEST_IP, BLAST_PORT))
        self.ready.set()
        data = b"b" * self.payload
        base = None
        while not self.stop.is_set():
            blasting = self.saw_start and not self.saw_end
            if blasting:
                if base is None:
                    base = self._consumed() or 0
                    self.blasted = 0
                done = self._consumed()
                queued = self.blasted - ((done - base) if done is not None else 0)
                if queued < self.backlog:
                    for _ in range(32):
                        try:
                            blast.send(data)
                            self.blasted += 1
                        except OSError:
                            self.send_errors += 1
                            break
                    timeout = 0
                else:
                    timeout = 0.0002
            else:
                # Nobody waits on the sink outside the RX phase: a sleeping
                # reader would be woken per datagram, and that wake-up is
                # charged to the VMM thread writing into the TAP. Drained
                # every 5 ms instead (16 MiB of buffer: >= 0.1 s of frames).
                timeout = None
                time.sleep(0.005)
            r = True if timeout is None else select.select([sink], [], [], timeout)[0]
            while r:
                try:
                    b = sink.recv(65536)
                except BlockingIOError:
                    break
                if b.startswith(b"ringvm-net-bench rx-start"):
                    self.saw_start = True
                elif b.startswith(b"ringvm-net-bench rx-end"):
                    self.saw_end = True
                elif not self.saw_start:
                    self.tx_datagrams += 1
        sink.close()
        blast.close()


# ---- CPU per thread group ----

class Groups:
    """ringvm: vcpu (vcpuN), main (its other threads), netdev (the child holding
    /dev/net/tun), otherdev (any other child). QEMU: vcpu ("CPU n/KVM"), main."""

    def __init__(self, pid, vmm):
        self.pid, self.vmm = pid, vmm
        self.child_kind = {}

    def _kind(self, child):
        k = self.child_kind.get(child)
        if k is None:
            k = "otherdev"
            try:
                for fd in os.listdir(f"/proc/{child}/fd"):
                    if os.readlink(f"/proc/{child}/fd/{fd}") == "/dev/net/tun":
                        k = "netdev"
                        break
            except OSError:
                return "otherdev"  # not yet known: ask again next time
            self.child_kind[child] = k
        return k

    def snapshot(self):
        snap = {}
        for tid in tasks(self.pid):
            comm = (read(f"/proc/{self.pid}/task/{tid}/comm") or "").strip()
            pat = r"vcpu\d+" if self.vmm == "ringvm" else r"CPU \d+/KVM"
            g = "vcpu" if re.fullmatch(pat, comm) else "main"
            ns = task_cpu_ns(self.pid, tid)
            if ns is not None:
                snap[(g, int(tid))] = ns
        if self.vmm == "ringvm":
            for child in descendants(self.pid):
                g = self._kind(child)
                for tid in tasks(child):
                    ns = task_cpu_ns(child, tid)
                    if ns is not None:
                        snap[(g, int(tid))] = ns
        return snap


class Sampler:
    """Windows between cues; a 10 ms background sampler keeps each thread's latest
    value so one that exits inside a window still counts."""

    def __init__(self, groups):
        self.g = groups
        self.last = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop.wait(0.01):
            s = self.g.snapshot()
            with self.lock:
                self.last.update(s)

    def mark(self):
        s = self.g.snapshot()
        with self.lock:
            self.last.update(s)
            return dict(self.last), time.monotonic()

    @staticmethod
    def delta(a, b):
        (sa, ta), (sb, tb) = a, b
        out = {}
        for k, v in sb.items():
            out[k[0]] = out.get(k[0], 0) + v - sa.get(k, 0)
        return {"window_s": tb - ta, "cpu_ms": {g: v / 1e6 for g, v in sorted(out.items())}}

    def close(self):
        self.stop.set()
        self.th.join()


# ---- one boot ----

def run_once(argv, vmm, ns, tap, size, backlog, timeout):
    peer = Peer(ns, tap, max(size - 42, 18), backlog)
    peer.start()
    peer.ready.wait(10)
    if peer.error:
        raise RuntimeError(f"host peer: {peer.error}")
    full = ["ip", "netns", "exec", ns] + argv  # ip execs the VMM: same pid
    p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    LIVE_PROCS.append(p)
    peer.vmm_pid = p.pid
    sampler = Sampler(Groups(p.pid, vmm))
    marks, taps, lines = {}, {}, []
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    try:
        for raw in p.stdout:
            line = raw.decode(errors="replace").strip()
            for cue, name in (("PROBE net.bench.start ", "start"), ("PROBE net.bench.tx ", "tx"),
                              ("PROBE net.bench.rx ", "rx")):
                if line.startswith(cue):
                    marks[name] = sampler.mark()
                    taps[name] = tap_counters(p.pid, tap)
            if line.startswith("PROBE"):
                lines.append(line)
        err = p.stderr.read().decode(errors="replace")
        rc = p.wait(timeout=30)
    finally:
        killer.cancel()
        sampler.close()
        peer.stop.set()
        peer.join(5)
        LIVE_PROCS.remove(p)
    end = [l for l in lines if l.startswith("PROBE-END")]
    if rc != 0 or end != ["PROBE-END status=ok"] or len(marks) != 3:
        raise RuntimeError(f"{vmm} size={size} failed (rc={rc}, end={end}):\n"
                           + "\n".join(lines[-5:]) + "\n" + err.strip()[-800:])
    kv = {}
    for l in lines:
        for k in ("net.bench.tx", "net.bench.rx"):
            if l.startswith(f"PROBE {k} "):
                kv[k] = parse_kv(l)
    out = {}
    for d, (a, b), key in (("tx", ("start", "tx"), "net.bench.tx"),
                           ("rx", ("tx", "rx"), "net.bench.rx")):
        g = kv[key]
        r = {"frames": int(g["frames"]), "us": int(g["us"]), "pps": int(g["pps"]),
             "irqs": int(g["irqs"]), "kicks": int(g["kicks"])}
        r["gbit_s"] = r["pps"] * size * 8 / 1e9
        r.update(Sampler.delta(marks[a], marks[b]))
        ta, tb = taps[a], taps[b]
        if ta and tb:
            r["tap"] = {k: tb[k] - ta[k] for k in ta}
        non_vcpu = sum(v for k, v in r["cpu_ms"].items() if k != "vcpu")
        r["cpu_non_vcpu_ms"] = non_vcpu
        r["cpu_us_per_pkt"] = non_vcpu * 1000 / r["frames"] if r["frames"] else None
        r["cpu_us_per_pkt_groups"] = {k: v * 1000 / r["frames"] for k, v in r["cpu_ms"].items()
                                      } if r["frames"] else {}
        out[d] = r
    out["rx"]["host_blasted"] = peer.blasted
    out["tx"]["host_received"] = peer.tx_datagrams
    return out


def run_harness(path, secs, timeout):
    r = subprocess.run([path, "--seconds", str(secs)], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"bench-net-harness failed (rc={r.returncode}): {r.stderr[-800:]}")
    rows = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    return {f"{x['path']}/{x['dir']}/{x['frame']}": x for x in rows}


# ---- output ----

def ratio(a, b):
    return a / b if a is not None and b else None


def f(v, d=1):
    return "-" if v is None else f"{v:,.{d}f}"


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    if os.geteuid() != 0:
        sys.exit("net.py: needs root (network namespaces, TAPs)")
    n = int(os.environ.get("NET_RUNS", "3"))
    secs = int(os.environ.get("NET_SECS", "2"))
    hsecs = os.environ.get("NET_HARNESS_SECS", "2")
    backlog = int(os.environ.get("NET_BACKLOG", "256"))
    sizes = [int(s) for s in os.environ.get("NET_SIZES", "64,1500").split(",")]
    do_harness = os.environ.get("NET_NO_HARNESS") != "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ringvm = os.path.abspath(os.path.join(build, "core", "ringvm"))
    probe = os.path.abspath(os.path.join(build, "tests", "guest", "probe.elf"))
    harness = os.path.abspath(os.path.join(build, "bench", "net", "bench-net-harness"))
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu or not os.path.exists("/usr/share/qemu/qboot.rom"):
        sys.exit("net.py: needs qemu-system-x86_64 and /usr/share/qemu/qboot.rom")
    for pth in (ringvm, probe) + ((harness,) if do_harness else ()):
        if not os.path.exists(pth):
            sys.exit(f"net.py: {pth} missing (build first)")

    atexit.register(cleanup)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    reap_stale()
    nss = {"ringvm": ns_create("r"), "qemu": ns_create("q")}

    def params(size):
        return (f"probe=timer,net.bench net.size={size} net.secs={secs} net.phases=tx,rx "
                f"net.ip={GUEST_IP} net.peer={HOST_IP} net.dport={DPORT}")

    def argv(vmm, size):
        tap = nss[vmm][1]
        if vmm == "ringvm":
            return [ringvm, "run", "-m", "256", "-p", params(size), "--net",
                    f"tap={tap},mac={GUEST_MAC}", probe]
        return [qemu, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc", "-m", "256",
                "-smp", "1", "-name", "probe,debug-threads=on", "-nodefaults", "-no-reboot",
                "-display", "none", "-serial", "stdio", "-bios", "/usr/share/qemu/qboot.rom",
                "-kernel", probe,
                "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no,vhost=off",
                "-device", f"virtio-net-pci,netdev=n0,disable-legacy=on,mac={GUEST_MAC}",
                "-append", params(size)]

    info = machine_info(root, qemu)
    t_start = time.time()
    raw = {v: {s: [] for s in sizes} for v in ("ringvm", "qemu")}
    hraw = []
    for i in range(n):
        order = ("ringvm", "qemu") if i % 2 == 0 else ("qemu", "ringvm")
        for size in sizes:
            for vmm in order:
                ns, tap = nss[vmm]
                raw[vmm][size].append(run_once(argv(vmm, size), vmm, ns, tap, size, backlog,
                                               timeout=60 + 2 * secs))
        if do_harness:
            hraw.append(run_harness(harness, hsecs, timeout=120 + 16 * float(hsecs)))
        print(f"run {i + 1}/{n} done", file=sys.stderr, flush=True)

    # medians
    summary = {}
    for vmm, by_size in raw.items():
        for size, runs in by_size.items():
            for d in ("tx", "rx"):
                rs = [r[d] for r in runs]
                groups = sorted({g for r in rs for g in r["cpu_ms"]})
                summary[f"{vmm}/{d}/{size}"] = {
                    "pps": med([r["pps"] for r in rs]),
                    "pps_min": min(r["pps"] for r in rs), "pps_max": max(r["pps"] for r in rs),
                    "gbit_s": med([r["gbit_s"] for r in rs]),
                    "frames": med([r["frames"] for r in rs]),
                    "cpu_us_per_pkt": med([r["cpu_us_per_pkt"] for r in rs]),
                    "cpu_us_per_pkt_min": min(r["cpu_us_per_pkt"] for r in rs),
                    "cpu_us_per_pkt_max": max(r["cpu_us_per_pkt"] for r in rs),
                    "cpu_us_per_pkt_groups": {g: med([r["cpu_us_per_pkt_groups"].get(g)
                                                      for r in rs]) for g in groups},
                    "cpu_non_vcpu_pct": med([r["cpu_non_vcpu_ms"] / 10 / r["window_s"]
                                             for r in rs]),
                    "irqs_per_pkt": med([r["irqs"] / r["frames"] for r in rs if r["frames"]]),
                    "kicks_per_pkt": med([r["kicks"] / r["frames"] for r in rs if r["frames"]]),
                    "tap": {k: med([r["tap"][k] for r in rs if "tap" in r])
                            for k in ("rx_packets", "tx_packets", "tx_dropped")},
                }
    rows = []
    for size in sizes:
        for d in ("tx", "rx"):
            r, q = summary[f"ringvm/{d}/{size}"], summary[f"qemu/{d}/{size}"]
            cr = ratio(r["cpu_us_per_pkt"], q["cpu_us_per_pkt"])
            # run i of ringvm against run i of QEMU (minutes apart at most): less
            # sensitive to the host's load drifting between runs
            paired = med([ratio(a[d]["cpu_us_per_pkt"], b[d]["cpu_us_per_pkt"])
                          for a, b in zip(raw["ringvm"][size], raw["qemu"][size])])
            rows.append({"dir": d, "size": size, "ringvm": r, "qemu": q, "cpu_ratio": cr,
                         "cpu_ratio_paired": paired,
                         "pps_ratio": ratio(r["pps"], q["pps"]),
                         "target_met": cr is not None and cr <= TARGET})
    hsum = {}
    for key in sorted({k for h in hraw for k in h}):
        xs = [h[key] for h in hraw if key in h]
        hsum[key] = {"pps": med([x["pps"] for x in xs]), "gbit_s": med([x["gbit_s"] for x in xs]),
                     "pps_min": min(x["pps"] for x in xs), "pps_max": max(x["pps"] for x in xs),
                     "irqs_per_frame": med([x.get("irqs_per_frame") for x in xs])}
    hrows = []
    for size in sizes:
        for d in ("tx", "rx"):
            dv, hl = hsum.get(f"device/{d}/{size}"), hsum.get(f"host-loop/{d}/{size}")
            if dv and hl:
                hrows.append({"dir": d, "size": size, "device": dv, "host_loop": hl,
                              "ratio": ratio(dv["pps"], hl["pps"])})

    # table
    md = []
    md.append(f"Guest traffic, `net.bench` {secs} s per phase, median of {n} runs. Host CPU per "
              "packet = all non-vCPU threads of the VMM (ringvm: main process + device "
              "processes) ÷ the probe's packet count; target ringvm ≤ "
              f"{TARGET}× QEMU.\n")
    md.append("| dir | frame | ringvm pps | QEMU pps | ringvm Gbit/s | QEMU Gbit/s | "
              "ringvm CPU µs/pkt (main + net dev) | QEMU CPU µs/pkt | ringvm/QEMU CPU (per-run pairs) | "
              f"≤ {TARGET}× | vCPU µs/pkt ringvm / QEMU |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        r, q = row["ringvm"], row["qemu"]
        g = r["cpu_us_per_pkt_groups"]
        md.append(f"| {row['dir'].upper()} | {row['size']} | {f(r['pps'], 0)} | {f(q['pps'], 0)} | "
                  f"{f(r['gbit_s'], 3)} | {f(q['gbit_s'], 3)} | "
                  f"{f(r['cpu_us_per_pkt'], 2)} ({f(g.get('main'), 2)} + "
                  f"{f(g.get('netdev'), 2)}) | {f(q['cpu_us_per_pkt'], 2)} | "
                  f"{f(row['cpu_ratio'], 2)}× ({f(row['cpu_ratio_paired'], 2)}×) | {'yes' if row['target_met'] else 'NO'} | "
                  f"{f(g.get('vcpu'), 2)} / {f(q['cpu_us_per_pkt_groups'].get('vcpu'), 2)} |")
    if hrows:
        md.append("")
        md.append(f"Device only (`bench-net-harness --seconds {hsecs}`: the jailed net device "
                  "driven from the host, no guest), next to a plain TAP readv/writev loop, "
                  f"median of {len(hraw)} runs.\n")
        md.append("| dir | frame | device pps | device Gbit/s | irqs/frame | host loop pps | "
                  "host loop Gbit/s | device / host loop |")
        md.append("|---|---|---|---|---|---|---|---|")
        for h in hrows:
            md.append(f"| {h['dir'].upper()} | {h['size']} | {f(h['device']['pps'], 0)} | "
                      f"{f(h['device']['gbit_s'], 3)} | {f(h['device']['irqs_per_frame'], 3)} | "
                      f"{f(h['host_loop']['pps'], 0)} | {f(h['host_loop']['gbit_s'], 3)} | "
                      f"{f(h['ratio'], 2)}× |")
    met = all(r["target_met"] for r in rows)
    md.append("")
    md.append(f"Target (ringvm host CPU per packet ≤ {TARGET}× QEMU) "
              + ("met in every cell." if met else "MISSED in: " + ", ".join(
                  f"{r['dir'].upper()} {r['size']} ({f(r['cpu_ratio'], 2)}×)"
                  for r in rows if not r["target_met"]) + "."))
    text = "\n".join(md)
    print(text)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    cmds = {f"{v}_{s}": ["ip", "netns", "exec", nss[v][0]] + argv(v, s)
            for v in ("ringvm", "qemu") for s in sizes}
    out = {"benchmark": "net", "runs": n, "secs": secs, "backlog": backlog, "target": TARGET,
           "build_dir": os.path.abspath(build), "time": time.strftime(
               "%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
           "duration_s": time.time() - t_start, "commands": cmds,
           "harness_command": [harness, "--seconds", hsecs] if do_harness else None,
           "machine": dict(info, loadavg_end=(read("/proc/loadavg") or "").split()[:3]),
           "table": rows, "target_met": met, "harness": hrows, "summary": summary,
           "raw": {v: {str(s): r for s, r in d.items()} for v, d in raw.items()},
           "harness_raw": hraw}
    os.makedirs(os.path.join(root, "bench", "results"), exist_ok=True)
    base = os.path.join(root, "bench", "results", f"net-{stamp}")
    with open(base + ".json", "w") as fh:
        json.dump(out, fh, indent=2)
    with open(base + ".md", "w") as fh:
        fh.write(f"# net benchmark {out['time']} (commit {info['commit']}"
                 f"{', dirty' if info['worktree_dirty'] else ''}, load "
                 f"{' '.join(info['loadavg_start'])})\n\n`bench/net.sh {build}` "
                 f"NET_RUNS={n} NET_SECS={secs}\n\n{text}\n")
    print(f"wrote {base}.json and {base}.md")


if __name__ == "__main__":
    main()
