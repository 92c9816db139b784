"""Guest-driven part of the vsock benchmark (bench/vsock.py's probe_part()).

Boots the probe guest under ringvm with `--vsock` and runs its `vsock.bench`
(tests/guest/test_vsock.c): guest → host MiB of pattern in 64 KiB packets to a
host sink at PATH_<port> (timed by the guest until its last TX completed),
host → guest MiB from a host source at PATH_<port + 1> written in 64 KiB
writes (timed from the first byte to the last), then connection setup: the
guest opens and closes connections to the sink one after another. The probe
runs at ~1 µs per guest instruction on these hosts (PVM), so these rates are
what the guest can drive, not the device's limit (that is the harness part).

Environment: VSOCK_PROBE_MIB (default 64), VSOCK_PROBE_CONNS (100).
"""
import os, shutil, socket, statistics, subprocess, tempfile, threading

PORT = 5000
CHUNK = 65536


class Listeners:
    """A sink at <uds>_PORT and a source of mib MiB at <uds>_<PORT + 1>."""

    def __init__(self, uds, mib):
        self.stop = False
        self.sink_bytes = 0
        self.source_bytes = 0
        self.block = os.urandom(CHUNK)
        self.mib = mib
        self.socks = []
        for port, fn in ((PORT, self.sink), (PORT + 1, self.source)):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(f"{uds}_{port}")
            s.listen(128)
            s.settimeout(0.2)
            self.socks.append(s)
            threading.Thread(target=self.accept, args=(s, fn), daemon=True).start()

    def accept(self, s, fn):
        while not self.stop:
            try:
                c, _ = s.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=fn, args=(c,), daemon=True).start()

    def sink(self, c):
        with c:
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                self.sink_bytes += len(d)

    def source(self, c):
        with c:
            try:
                for _ in range(self.mib * (1 << 20) // CHUNK):
                    c.sendall(self.block)
                    self.source_bytes += CHUNK
            except OSError:
                pass

    def close(self):
        self.stop = True
        for s in self.socks:
            s.close()


def kv(line):
    out = {}
    for tok in line.split()[2:]:
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def one_run(ringvm, probe, mib, conns, sandbox):
    d = tempfile.mkdtemp(prefix="rvsb-")
    uds = os.path.join(d, "v.sock")
    lis = Listeners(uds, mib)
    argv = [ringvm, "run", "-m", "256", "-p",
            f"probe=vsock.bench vsock.bench.port={PORT} vsock.bench.mib={mib} "
            f"vsock.bench.conns={conns}",
            "--vsock", f"cid=3,uds={uds}"] + ([] if sandbox else ["--disable-sandbox"]) + [probe]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    finally:
        lis.close()
        shutil.rmtree(d, ignore_errors=True)
    lines = {l.split()[1]: l for l in r.stdout.splitlines() if l.startswith("PROBE ")}
    summary = lines.get("vsock.bench", "")
    if r.returncode or "PROBE-END status=ok" not in r.stdout or "result=ok" not in summary:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-2000:]}"
                           f"\n{r.stderr[-1000:]}")
    m = kv(summary)
    return argv, {"g2h_mb_s": m["tx_mbps"], "h2g_mb_s": m["rx_mbps"],
                  "setup_per_s": m["conn_rate"], "host_sink_bytes": lis.sink_bytes,
                  "host_source_bytes": lis.source_bytes}


def run(build, runs, sandbox=True):
    """Medians of runs probe runs; None when the probe or ringvm is missing."""
    ringvm = os.path.join(build, "core", "ringvm")
    probe = os.path.join(build, "tests", "guest", "probe.elf")
    if not (os.path.exists(ringvm) and os.path.exists(probe) and os.access("/dev/kvm", os.W_OK)):
        return None
    mib = int(os.environ.get("VSOCK_PROBE_MIB", "64"))
    conns = int(os.environ.get("VSOCK_PROBE_CONNS", "100"))
    raw, argv = [], None
    for i in range(runs):
        argv, r = one_run(ringvm, probe, mib, conns, sandbox)
        raw.append(r)
        print(f"probe run {i + 1}/{runs}: guest->host {r['g2h_mb_s']:.1f} MB/s, "
              f"host->guest {r['h2g_mb_s']:.1f} MB/s, setup {r['setup_per_s']:.0f}/s",
              flush=True)
    med = {k: statistics.median(r[k] for r in raw) for k in ("g2h_mb_s", "h2g_mb_s",
                                                             "setup_per_s")}
    return {"command": argv, "mib": mib, "conns": conns, "runs": runs, "medians": med,
            "raw": raw}
