#!/usr/bin/env python3
"""Boot-time benchmark: ringvm vs QEMU+qboot on the same probe guest.

For each VMM, runs `probe=hello` N times and records, from the moment the
process is spawned: time to the probe's first output line, time to process
exit, and for ringvm its own start-up (exec -> first KVM_RUN, reported by
ringvm itself on CLOCK_MONOTONIC when RINGVM_STARTUP_REPORT is set).
Prints a table of medians and writes JSON under bench/results/.
"""
import json, os, shutil, statistics, subprocess, sys, time, platform

def run_once(argv, env=None, timeout=60):
    t0 = time.monotonic_ns()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    first = None
    for line in p.stdout:
        if first is None and line.startswith(b"PROBE "):
            first = time.monotonic_ns()
    err = p.stderr.read().decode(errors="replace")
    rc = p.wait(timeout=timeout)
    t_exit = time.monotonic_ns()
    if rc != 0 or first is None:
        raise RuntimeError(f"{argv[0]} failed (rc={rc}): {err.strip()[-300:]}")
    res = {"first_line_ms": (first - t0) / 1e6, "exit_ms": (t_exit - t0) / 1e6}
    for tok in err.split():
        if tok.startswith("first_run_monotonic_ns="):
            res["exec_to_first_run_ms"] = (int(tok.split("=")[1]) - t0) / 1e6
        elif tok.startswith("startup_ns="):
            res["vm_setup_ms"] = int(tok.split("=")[1]) / 1e6
    return res

def summarize(runs):
    keys = runs[0].keys()
    return {k: {"median": statistics.median(r[k] for r in runs),
                "min": min(r[k] for r in runs), "max": max(r[k] for r in runs)}
            for k in keys}

def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    n = int(os.environ.get("BOOT_RUNS", "10"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ringvm = os.path.join(build, "core", "ringvm")
    probe = os.path.join(build, "tests", "guest", "probe.elf")
    results = {}
    load0 = open("/proc/loadavg").read().split()[:3]
    env = dict(os.environ, RINGVM_STARTUP_REPORT="1")
    rv = [run_once([ringvm, "run", "-m", "256", "-p", "probe=hello", probe], env) for _ in range(n)]
    results["ringvm"] = summarize(rv)
    qemu = shutil.which("qemu-system-x86_64")
    if qemu and os.path.exists("/usr/share/qemu/qboot.rom"):
        qv = [run_once([qemu, "-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc",
                        "-m", "256", "-nodefaults", "-no-reboot", "-display", "none",
                        "-serial", "stdio", "-bios", "/usr/share/qemu/qboot.rom",
                        "-kernel", probe, "-append", "probe=hello"]) for _ in range(n)]
        results["qemu_qboot"] = summarize(qv)
    r = results["ringvm"]
    print(f"boot benchmark: probe=hello, median of {n} runs (ms)")
    print(f"{'':24}{'first line':>12}{'exit':>10}{'VMM start-up':>14}")
    print(f"{'ringvm':24}{r['first_line_ms']['median']:12.2f}{r['exit_ms']['median']:10.2f}"
          f"{r['exec_to_first_run_ms']['median']:14.2f}")
    ratio = None
    if "qemu_qboot" in results:
        q = results["qemu_qboot"]
        print(f"{'qemu + qboot':24}{q['first_line_ms']['median']:12.2f}{q['exit_ms']['median']:10.2f}{'-':>14}")
        ratio = q["first_line_ms"]["median"] / r["first_line_ms"]["median"]
        print(f"ringvm is {ratio:.1f}x faster than QEMU+qboot to the first probe line "
              f"(target >= 5x); VMM start-up {r['exec_to_first_run_ms']['median']:.2f} ms "
              f"(target < 5 ms)")
    out = {"benchmark": "boot", "runs": n, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "host": platform.node(), "kernel": platform.release(),
           "commit": subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip(),
           "machine": {"loadavg_start": load0,
                       "loadavg_end": open("/proc/loadavg").read().split()[:3]},
           "results": results, "first_line_speedup_vs_qemu": ratio}
    os.makedirs(os.path.join(root, "bench", "results"), exist_ok=True)
    path = os.path.join(root, "bench", "results", f"boot-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
