#!/usr/bin/env python3
"""`make bench-report`: renders the latest `make bench` results as SVG plots.

Reads the newest bench/results/<timestamp>.json (written by bench/combine.py)
and writes, with gnuplot (Debian's gnuplot-nox), into docs/perf/:
  iops-qd.svg          device-only IOPS vs queue depth: bench-blk-harness (the
                       jailed device, no guest) and fio (the host's limit)
  cpu-per-request.svg  host CPU µs per request outside the vCPU threads,
                       ringvm vs QEMU and QEMU with an iothread
  service-time.svg     service-time distributions: the device's own
                       (avail -> used ring, harness runs) vs fio's clat
  boot.svg             spawn -> first probe line and -> exit, ringvm vs QEMU+qboot
  memory.svg           VMM memory excluding guest RAM, ringvm vs QEMU, and
                       Firecracker's 5 MiB bar (quoted, not measured)
plus report.md (the headline table, machine and commit) and summary.json
(the same without the raw samples). Error bars are min–max over repetitions.
Usage: bench/report.py [RESULTS_JSON] [OUT_DIR].
"""
import glob, json, os, re, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# REPORT_FORMAT=png renders PNG instead (for viewers without SVG)
FMT = os.environ.get("REPORT_FORMAT", "svg")
TERM = (f'set terminal pngcairo size 860,460 font "sans,10"' if FMT == "png" else
        'set terminal svg size 860,460 dynamic font "sans,11" background "white"')
# noenhanced: names like io_uring and O_DIRECT are not subscripts
COMMON = TERM + '\nset termoption noenhanced\nset grid ytics lc "#dddddd"\nset key below\n'


def latest():
    fs = [f for f in glob.glob(os.path.join(HERE, "results", "*.json"))
          if re.fullmatch(r"\d{8}-\d{6}\.json", os.path.basename(f))]
    if not fs:
        sys.exit("report.py: no bench/results/<timestamp>.json (run `make bench` first)")
    return max(fs)


def s3(s, scale=1.0):
    """median min max of a {median,min,max} dict, or NaN NaN NaN (gnuplot skips NaN)."""
    if not s or s.get("median") is None:
        return "NaN NaN NaN"
    return f"{s['median'] * scale:g} {s['min'] * scale:g} {s['max'] * scale:g}"


class Plot:
    def __init__(self, tmp, out):
        self.tmp, self.out, self.made = tmp, out, []

    def data(self, name, lines):
        p = os.path.join(self.tmp, name + ".dat")
        with open(p, "w") as f:
            f.write("\n".join(lines) + "\n")
        return p

    def render(self, name, script):
        svg = os.path.join(self.out, f"{name}.{FMT}")
        sc = os.path.join(self.tmp, name + ".gp")
        with open(sc, "w") as f:
            f.write(COMMON + f'set output "{svg}"\n' + script + "\n")
        r = subprocess.run(["gnuplot", sc], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"gnuplot {name}: {r.stderr.strip()[-600:]}")
        self.made.append(os.path.basename(svg))


def iops_qd(pl, blk):
    h, fio = blk["harness"], blk["fio"]
    qds = sorted({int(k.rsplit("qd", 1)[1]) for k in h if "/qd" in k})
    rows = [f"{q} " + " ".join(s3((d.get(k) or {}).get("iops"), 1e-3) for d, k in
                               ((h, f"shm/randread/qd{q}"), (fio, f"shm/randread/qd{q}"),
                                (h, f"shm/randwrite/qd{q}"), (fio, f"shm/randwrite/qd{q}"),
                                (h, f"qcow2/randread/qd{q}")))
            for q in qds]
    f = pl.data("iops", rows)
    pl.render("iops-qd", f"""set title "Device-only 4 KiB IOPS vs queue depth (raw file on tmpfs; median, min–max)"
set logscale x 2
set xlabel "queue depth"
set ylabel "k IOPS"
set yrange [0:*]
set xrange [{min(qds) * 0.8:g}:{max(qds) * 1.25:g}]
set xtics ({", ".join(str(q) for q in qds)})
plot "{f}" u 1:2:3:4 w yerrorlines lw 2 t "ringvm device (harness) randread", \\
     "" u 1:5:6:7 w yerrorlines lw 2 dt 2 t "fio io_uring randread (host limit)", \\
     "" u 1:8:9:10 w yerrorlines lw 2 t "ringvm device randwrite", \\
     "" u 1:11:12:13 w yerrorlines lw 2 dt 2 t "fio randwrite", \\
     "" u 1:14:15:16 w yerrorlines lw 2 t "ringvm device, allocated qcow2 randread\"""")


def cpu_per_request(pl, blk):
    vm = blk["vm"]
    names = {"shm": "tmpfs", "direct": "O_DIRECT", "qcow2": "qcow2", "fresh": "qcow2 fresh"}
    cases = sorted({k.split("/", 1)[1] for k in vm},
                   key=lambda c: (list(names).index(c.split("/")[0]), c))
    rows = []
    for c in cases:
        s, rw, qd = c.split("/")
        label = f"{names[s]} {rw.replace('rand', '')} {qd.upper()}"
        rows.append(f'"{label}" ' + " ".join(s3((vm.get(f"{v}/{c}") or {}).get("cpu_us_per_req"))
                                            for v in ("ringvm", "qemu", "qemu_iothread")))
    f = pl.data("cpu", rows)
    pl.render("cpu-per-request", f"""set title "Host CPU per 4 KiB request, every thread but the vCPU (probe blk.bench; median, min–max)"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.7 border -1
set ylabel "µs per request"
set yrange [0:*]
set xtics rotate by -30
set bmargin 7
set rmargin 10
plot "{f}" u 2:3:4:xtic(1) t "ringvm", "" u 5:6:7 t "QEMU 7.2", "" u 8:9:10 t "QEMU + iothread\"""")


def service_time(pl, blk):
    # y = 1/(1 - p): the tail gets room (50 % -> 2, 99 % -> 100, 99.9 % -> 1000)
    series, plots = [], []
    for src, key, title, dt in (("harness", "shm/randread/qd1", "ringvm device QD1", 1),
                                ("fio", "shm/randread/qd1", "fio clat QD1", 2),
                                ("harness", "shm/randread/qd32", "ringvm device QD32", 1),
                                ("fio", "shm/randread/qd32", "fio clat QD32", 2),
                                ("harness", "qcow2/randread/qd1", "ringvm device qcow2 QD1", 1)):
        pct = ((blk[src].get(key) or {}).get("pct_us") or {})
        pts = sorted((float(p), v) for p, v in pct.items() if v and 0 < float(p) < 100)
        if not pts:
            continue
        f = pl.data(f"svc{len(series)}", [f"{v:g} {100 / (100 - p):g}" for p, v in pts])
        series.append(f)
        plots.append(f'"{f}" u 1:2 w linespoints lw 2 dt {dt} t "{title}"')
    if not plots:
        return
    pl.render("service-time", f"""set title "Service-time distribution, 4 KiB randread, raw file on tmpfs (median of runs per percentile)"
set logscale x
set logscale y
set xlabel "µs (device: avail ring -> used ring; fio: completion latency)"
set ylabel "percentile"
set ytics ("1" 1.0101, "50" 2, "75" 4, "90" 10, "95" 20, "99" 100, "99.9" 1000)
plot {", ".join(plots)}""")


def boot(pl, b):
    r = b["results"]
    q = r.get("qemu_qboot", {})
    f = pl.data("boot", [f'"first probe line" {s3(r["ringvm"]["first_line_ms"])} '
                         f'{s3(q.get("first_line_ms"))}',
                         f'"process exit" {s3(r["ringvm"]["exit_ms"])} {s3(q.get("exit_ms"))}'])
    pl.render("boot", f"""set title "Boot: spawn -> probe guest milestones (median, min–max of {b['runs']} runs)"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.7 border -1
set ylabel "ms"
set yrange [0:*]
plot "{f}" u 2:3:4:xtic(1) t "ringvm", "" u 5:6:7 t "QEMU 7.2 + qboot\"""")


def memory(pl, m):
    s = m["summary"]
    rows = []
    for key in sorted(k for k in s if k.startswith("ringvm/")):
        _, dev, phase = key.split("/")
        t = s[key]["total"]
        q = (s.get(f"qemu/{dev}/{phase}") or {}).get("total") or {}
        rows.append(f'"{dev} {phase}" {s3(t["rss_kib"], 1 / 1024)} {s3(t["pss_kib"], 1 / 1024)} '
                    f'{s3(q.get("rss_kib"), 1 / 1024)} {s3(q.get("pss_kib"), 1 / 1024)}')
    f = pl.data("mem", rows)
    bar = m.get("firecracker_bar_kib", 5120) / 1024
    pl.render("memory", f"""set title "VMM memory excluding guest RAM, all processes (median, min–max)"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.7 border -1
set ylabel "MiB"
set logscale y
set yrange [0.5:*]
set xtics rotate by -30
set bmargin 6
plot "{f}" u 2:3:4:xtic(1) t "ringvm RSS", "" u 5:6:7 t "ringvm PSS", \\
     "" u 8:9:10 t "QEMU RSS", "" u 11:12:13 t "QEMU PSS", \\
     {bar:g} w lines lw 2 dt 2 lc "red" t "Firecracker bar, {bar:g} MiB (not measured here)\"""")


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else latest()
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs", "perf")
    if not shutil.which("gnuplot"):
        sys.exit("report.py: gnuplot missing (tools/install-deps installs gnuplot-nox)")
    with open(src) as f:
        doc = json.load(f)
    b = doc["benchmarks"]
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pl = Plot(tmp, out)
        if "blk" in b:
            iops_qd(pl, b["blk"])
            cpu_per_request(pl, b["blk"])
            service_time(pl, b["blk"])
        if "boot" in b:
            boot(pl, b["boot"])
        if "memory" in b:
            memory(pl, b["memory"])
    md_src = src[:-5] + ".md"
    table = open(md_src).read() if os.path.exists(md_src) else ""
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(f"<!-- rendered by `make bench-report` from bench/results/"
                f"{os.path.basename(src)} -->\n" + table + "\n"
                + "\n".join(f"![{p[:-4]}]({p})" for p in pl.made) + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({k: v for k, v in doc.items() if k != "benchmarks"}, f, indent=1)
    print(f"report.py: {src} -> {out}: {', '.join(pl.made)}, report.md, summary.json")


if __name__ == "__main__":
    main()
