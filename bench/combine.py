#!/usr/bin/env python3
"""Gathers one `make bench` run into bench/results/<timestamp>.{json,md}.

Takes, for every benchmark (boot, proxy, blk, async, net, vsock, memory), the
newest bench/results/<name>-*.json written since START (seconds since the
epoch, from bench/run-all), embeds it whole (every figure, samples included)
next to the machine's description, and writes a Markdown table of the
headline figures with their in-run references and spreads.
Usage: bench/combine.py START. bench/report.py renders the result.
"""
import glob, json, os, platform, subprocess, sys, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy import read  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
NAMES = ["boot", "proxy", "blk", "async", "net", "vsock", "memory"]


def newest(name, since):
    fs = [f for f in glob.glob(os.path.join(RESULTS, f"{name}-*.json"))
          if os.path.getmtime(f) >= since]
    return max(fs, key=os.path.getmtime) if fs else None


def machine():
    cpu = "?"
    for l in (read("/proc/cpuinfo") or "").splitlines():
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
    git = lambda *a: subprocess.run(["git", "-C", HERE, *a], capture_output=True,
                                    text=True).stdout.strip()
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "kernel": platform.release(), "loadavg_end": (read("/proc/loadavg") or "").split()[:3],
            "commit": git("rev-parse", "--short", "HEAD"),
            "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def f(v, d=1):
    return "–" if v is None else f"{v:.{d}f}"


def mm(s, d=1, scale=1.0):
    """'median (min–max)' of a {median,min,max} dict."""
    if not s or s.get("median") is None:
        return "–"
    return f"{s['median'] * scale:.{d}f} ({s['min'] * scale:.{d}f}–{s['max'] * scale:.{d}f})"


def load_of(doc):
    m = doc.get("machine") or {}
    a, b = m.get("loadavg_start"), m.get("loadavg_end")
    return f"{a[0]}→{b[0]}" if a and b else (a[0] if a else "?")


def headline(b):
    """[(benchmark, figure, ringvm, reference, ratio, load)] for the Markdown table."""
    rows = []
    if "boot" in b:
        r = b["boot"]["results"]
        q = r.get("qemu_qboot", {})
        rows.append(("boot", "spawn → first probe line, ms", mm(r["ringvm"]["first_line_ms"]),
                     "QEMU+qboot " + mm(q.get("first_line_ms")),
                     f(b["boot"].get("first_line_speedup_vs_qemu"), 1) + "× faster", load_of(b["boot"])))
        rows.append(("boot", "exec → first KVM_RUN (ringvm), ms",
                     mm(r["ringvm"].get("exec_to_first_run_ms"), 2), "target < 5 ms", "",
                     load_of(b["boot"])))
    if "proxy" in b:
        p = b["proxy"]
        for e in p["proxied_vs_main"]:
            for c in ("ringvm_1cpu", "ringvm_split"):
                if c in e:
                    rows.append(("proxy", f"{e['proxied']} − {e['main']} net µs, {c}",
                                 f(e[c]["proxied_net50_us"]), f(e[c]["main_net50_us"]),
                                 f(e[c]["ratio"], 2) + "×", load_of(p)))
        cpu = p["rng_cpu_us_per_request_non_vcpu"]
        rows.append(("proxy", "rng host CPU µs per 64 KiB request (non-vCPU)", f(cpu["ringvm"]),
                     f"QEMU /dev/urandom {f(cpu.get('qemu_urandom'))}",
                     f(cpu["ringvm"] / cpu["qemu_urandom"], 2) + "×" if cpu.get("qemu_urandom")
                     else "", load_of(p)))
    if "blk" in b:
        for t in b["blk"]["table"]:
            if t["figure"].startswith("guest"):
                continue
            rows.append(("blk", f"{t['figure']}: {t['case']}", t["ringvm median (min–max)"],
                         t["reference median (min–max)"], t["ratio"], load_of(b["blk"])))
    if "async" in b:
        a = b["async"]
        for k, v in a["ratios"].items():
            rows.append(("async", k.replace("_", " "), "", "", f(v, 2) + "×", load_of(a)))
    if "net" in b:
        n = b["net"]
        for r in n["table"]:
            rows.append(("net", f"host CPU µs/pkt {r['dir'].upper()} {r['size']} B",
                         f(r["ringvm"]["cpu_us_per_pkt"], 2),
                         f"QEMU {f(r['qemu']['cpu_us_per_pkt'], 2)}",
                         f(r["cpu_ratio"], 2) + "×", load_of(n)))
        for h in n["harness"]:
            rows.append(("net", f"device-only pps {h['dir'].upper()} {h['size']} B",
                         f(h["device"]["pps"], 0), f"host loop {f(h['host_loop']['pps'], 0)}",
                         f(h["ratio"], 2) + "×", load_of(n)))
    if "vsock" in b:  # written on another branch: show whatever ratios it reports
        for k, v in (b["vsock"].get("ratios") or {}).items():
            if isinstance(v, (int, float)):
                rows.append(("vsock", k.replace("_", " "), "", "", f(v, 2) + "×",
                             load_of(b["vsock"])))
    if "memory" in b:
        s = b["memory"]["summary"]
        for key in sorted(s):
            vmm, dev, phase = key.split("/")
            if vmm != "ringvm":
                continue
            q = s.get(f"qemu/{dev}/{phase}", {}).get("total")
            t = s[key]["total"]
            rows.append(("memory", f"{dev} {phase}: RSS / PSS MiB excl. guest RAM, all processes",
                         f"{mm(t['rss_kib'], 2, 1 / 1024)} / {mm(t['pss_kib'], 2, 1 / 1024)}",
                         (f"QEMU {mm(q['rss_kib'], 2, 1 / 1024)} / {mm(q['pss_kib'], 2, 1 / 1024)}"
                          if q else "Firecracker bar ≤ 5 MiB (not measured)"),
                         f(t["rss_kib"]["median"] / q["rss_kib"]["median"], 2) + "× RSS" if q
                         else "", load_of(b["memory"])))
    return rows


def main():
    since = float(sys.argv[1]) if len(sys.argv) > 1 else 0
    files = {n: newest(n, since) for n in NAMES}
    b = {}
    for n, p in files.items():
        if p:
            with open(p) as fh:
                b[n] = json.load(fh)
    if not b:
        sys.exit("combine.py: no results since the start of this run")
    rows = headline(b)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    m = machine()
    out = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": m,
           "files": {n: os.path.basename(p) for n, p in files.items() if p},
           "missing": [n for n in NAMES if n not in b],
           "headline": [dict(zip(("benchmark", "figure", "ringvm", "reference", "ratio",
                                  "load"), r)) for r in rows],
           "benchmarks": b}
    path = os.path.join(RESULTS, f"{stamp}.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
    md = [f"# ringvm benchmarks, {out['time']}", "",
          f"Commit {m['commit']}{' (dirty tree)' if m['worktree_dirty'] else ''}; "
          f"{m['cpu']}, {m['cores']} cores, kernel {m['kernel']}; load average at the end "
          f"{' '.join(m['loadavg_end'])}. Medians (min–max) over each benchmark's repetitions; "
          "`load` is the 1-minute load average at the start→end of that benchmark. Not run: "
          f"{', '.join(out['missing']) or 'none'}.", "",
          "| benchmark | figure | ringvm | reference (same run) | ratio | load |",
          "|---|---|---|---|---|---|"]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    with open(path[:-5] + ".md", "w") as fh:
        fh.write("\n".join(md) + "\n")
    print(f"wrote {path} and {os.path.basename(path[:-5])}.md")


if __name__ == "__main__":
    main()
