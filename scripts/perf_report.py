#!/usr/bin/env python3
"""Regenerates the measured part of docs/performance.md: qil's training step against PyTorch's, side by side.

For each configuration (ResNet-18 @224 b32, ResNet-20 @32 b128, AlexNet @224 b64; full precision and QIL W4A4, and
W4A4 with the integer forward `--int8-forward` on the two ResNets)
it runs `qil bench --json` and scripts/torch_ref.py INTERLEAVED (qil, PyTorch, qil, PyTorch, ...; one
process per run, the same thread count) and reports, per configuration:
  - the median images/s of each side and the median of the per-pair ratios qil / PyTorch;
  - the share of the machine's FMA peak qil's convolutions and linear layers reach (scripts/fma_peak.sh, run
    first on the same thread count);
  - each side's peak resident memory (the process's ru_maxrss, read by wait4 for every run; the median);
  - the CPU, its SIMD flags and the load average before and after, so a loaded run can be told from a quiet one.
Checks the targets of docs/performance.md ("Targets") and says met / not met for each. PyTorch (Debian's
python3-torch) is a yardstick only, never a dependency of qil.

Where the CPU has AVX512_BF16 (or AMX), or with --bf16 on, it adds ResNet-18 rows in bf16: qil --precision bf16
against PyTorch's autocast-bf16 (torch_ref.py --bf16), full precision and W4A4. On a CPU without native bf16, qil
runs its exact emulation there (no faster than its fp32): --bf16 on exists to exercise those rows anywhere.

Usage: scripts/perf_report.py [--pairs N] [--threads T] [--only GLOB] [--bf16 auto|on|off] [--no-write]
Writes the section between the perf_report markers of docs/performance.md and the raw runs to
docs/performance/report.json (--no-write: print the section only). Takes ~15-20 minutes on 2 cores with
5 pairs. Benchmarks need a quiet machine: stop other work first (`uptime`).
"""
import argparse, fnmatch, json, os, re, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "performance.md")
RAW = os.path.join(ROOT, "docs", "performance", "report.json")
BEGIN, END = "<!-- perf_report:begin -->", "<!-- perf_report:end -->"

# label, model, batch, image size, classes, timed steps
NETS = [
    ("ResNet-18 @224 b32", "resnet18", 32, 224, 1000, 3),
    ("ResNet-20 @32 b128", "resnet20", 128, 32, 10, 6),
    ("AlexNet @224 b64", "alexnet", 64, 224, 1000, 3),
]


def cpu_info():
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    simd = sorted(x for x in flags if re.fullmatch(r"avx2|fma|avx512\w*|amx\w*|avx_vnni", x))
    return model, simd


def busy_processes():
    """The names of the processes above 20% CPU now, comma-separated (what a benchmark must not run beside)."""
    ps = subprocess.run(["ps", "-eo", "pcpu=,comm="], capture_output=True, text=True).stdout
    return ", ".join(sorted({l.split(None, 1)[1] for l in ps.splitlines() if float(l.split()[0]) > 20}))


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def replace_section(path, begin, end, text, fallback_heading=None):
    """Puts text in place of path's begin ... end section (atomically: a .tmp, then a rename). Without the markers:
    appended under fallback_heading, or an error when there is none."""
    doc = open(path).read()
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + text + doc[doc.index(end) + len(end):]
    elif fallback_heading:
        doc = doc.rstrip("\n") + f"\n\n## {fallback_heading}\n\n" + text + "\n"
    else:
        raise SystemExit(f"{os.path.basename(sys.argv[0])}: {path} has no {begin} ... {end} markers")
    with open(path + ".tmp", "w") as f:
        f.write(doc)
    os.replace(path + ".tmp", path)


def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def run(cmd, env=None):
    """Runs cmd; returns (stdout, peak RSS in MiB) — the child's own high-water mark, from wait4."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"perf_report: {' '.join(cmd)} failed (exit {p.returncode}):\n{err[-2000:]}")
    return out, usage.ru_maxrss / 1024.0


def fma_peak(threads):
    """The best of three probes: a peak is a maximum, and one probe can lose a time slice to another process."""
    return max(fma_probe(threads) for _ in range(3))


def fma_probe(threads):
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fma_peak.sh"), str(threads)], check=True,
                         capture_output=True, text=True).stdout
    m = re.findall(r"fma_peak_gflops=([0-9.]+)", out)
    if not m:
        raise SystemExit(f"perf_report: no fma_peak_gflops= in fma_peak.sh's output:\n{out}")
    return float(m[-1])


def ours(a, net, bits, peak, bf16=False, int8_forward=False):
    _, model, batch, res, classes, steps = net
    cmd = [a.qil, "bench", "--model", model, "--batch", str(batch), "--image-size", str(res), "--num-classes",
           str(classes), "--steps", str(steps), "--warmup", "2", "--repeat", "1", "--threads", str(a.threads),
           "--quant", str(bits), "--peak-gflops", f"{peak:.1f}", "--json", "--precision", "bf16" if bf16 else "fp32"]
    if int8_forward:
        cmd.append("--int8-forward")
    out, rss = run(cmd)
    j = json.loads(out.strip().splitlines()[-1])
    return {"img_s": j["img_per_s"], "gflops": j["gflops"], "peak_pct": j["peak_pct"], "rss_mib": rss}


def theirs(a, net, bits, bf16=False):
    _, model, batch, res, _, steps = net
    cmd = [a.python, a.torch_ref, model, str(batch), str(res), str(steps), "--repeat", "1", "--threads",
           str(a.threads)] + (["--qil", str(bits)] if bits != 32 else []) + (["--bf16"] if bf16 else [])
    out, rss = run(cmd)
    m = re.search(r"img/s=([0-9.]+)", out.strip().splitlines()[-1])
    return {"img_s": float(m.group(1)), "rss_mib": rss}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def configurations(a, simd):
    """(name, net, bits, bf16, int8_forward) in the order they run: every net FP32 and W4A4, ResNet-18 and ResNet-20
    W4A4 with the integer forward (`--int8-forward`; PyTorch's side is its W4A4 step), then ResNet-18 in bf16 where
    the CPU has native bf16 (or --bf16 on)."""
    out = [(f"{net[0]} {'FP32' if bits == 32 else 'QIL W4A4'}", net, bits, False, False) for net in NETS
           for bits in (32, 4)]
    out += [(f"{net[0]} QIL W4A4 int8-forward", net, 4, False, True) for net in NETS[:2]]
    if a.bf16 == "on" or (a.bf16 == "auto" and native_bf16(simd)):
        out += [(f"{NETS[0][0]} {'bf16' if bits == 32 else 'QIL W4A4 bf16'}", NETS[0], bits, True, False)
                for bits in (32, 4)]
        out.append((f"{NETS[0][0]} QIL W4A4 bf16 int8-forward", NETS[0], 4, True, True))
    return [c for c in out if fnmatch.fnmatch(c[0], a.only)]


def native_bf16(simd):
    return any(x.startswith("avx512_bf16") or x.startswith("amx_bf16") for x in simd)


def measure(a, peak, simd):
    rows = []
    for name, net, bits, bf16, int8_forward in configurations(a, simd):
        pairs = []
        for i in range(a.pairs):
            q = ours(a, net, bits, peak, bf16, int8_forward)
            t = theirs(a, net, bits, bf16)
            pairs.append({"qil": q, "torch": t})
            print(f"{name}: pair {i + 1}/{a.pairs}: qil {q['img_s']:.2f} img/s ({q['rss_mib']:.0f} MiB), "
                  f"PyTorch {t['img_s']:.2f} img/s ({t['rss_mib']:.0f} MiB); load {loadavg()}",
                  file=sys.stderr, flush=True)
        rows.append({"name": name, "net": net[0], "bits": bits, "bf16": bf16, "int8_forward": int8_forward,
                     "pairs": pairs})
    return rows


def summary(r):
    q = [p["qil"] for p in r["pairs"]]
    t = [p["torch"] for p in r["pairs"]]
    return {
        "qil": med([x["img_s"] for x in q]), "torch": med([x["img_s"] for x in t]),
        "ratio": med([x["img_s"] / y["img_s"] for x, y in zip(q, t)]),
        "ratio_lo": min(x["img_s"] / y["img_s"] for x, y in zip(q, t)),
        "ratio_hi": max(x["img_s"] / y["img_s"] for x, y in zip(q, t)),
        "gflops": med([x["gflops"] for x in q]), "peak_pct": med([x["peak_pct"] for x in q]),
        "rss_q": med([x["rss_mib"] for x in q]), "rss_t": med([x["rss_mib"] for x in t]),
    }


def verdicts(rows):
    s = {r["name"]: summary(r) for r in rows}
    out = []

    def check(text, names, ok):
        if all(n in s for n in names):
            out.append(f"- {text}: **{'met' if ok(*[s[n] for n in names]) else 'not met'}**")

    r18, r20, alex = "ResNet-18 @224 b32", "ResNet-20 @32 b128", "AlexNet @224 b64"
    f = lambda n: f"{n} FP32"
    w = lambda n: f"{n} QIL W4A4"
    if f(r18) in s:
        x = s[f(r18)]
        check(f"ResNet-18 @224 b32 FP32 at ≥ 70% of the FMA peak: {x['peak_pct']:.1f}%", [f(r18)],
              lambda x: x["peak_pct"] >= 70)
        check(f"ResNet-18 @224 b32 FP32 ≥ 1.5× PyTorch: {x['ratio']:.2f}×", [f(r18)], lambda x: x["ratio"] >= 1.5)
    if f(r20) in s:
        check(f"ResNet-20 @32 b128 FP32 ≥ 1.6× PyTorch: {s[f(r20)]['ratio']:.2f}×", [f(r20)],
              lambda x: x["ratio"] >= 1.6)
    if f(r20) in s and w(r20) in s:
        rel = s[w(r20)]["qil"] / s[f(r20)]["qil"]
        check(f"ResNet-20 QIL W4A4 within 5% of qil's own FP32 step: {rel:.2f} of its images/s", [f(r20), w(r20)],
              lambda a, b: b["qil"] >= 0.95 * a["qil"])
    for n in (f(alex), w(alex)):
        if n in s:
            check(f"{n} ≥ 1.2× PyTorch: {s[n]['ratio']:.2f}×", [n], lambda x: x["ratio"] >= 1.2)
    for n in (f(r18), f(r20)):
        if n in s:
            check(f"{n} peak memory ≤ PyTorch's: {s[n]['rss_q']:.0f} vs {s[n]['rss_t']:.0f} MiB", [n],
                  lambda x: x["rss_q"] <= x["rss_t"])
    b, wb = f"{r18} bf16", f"{r18} QIL W4A4 bf16"
    if b in s:
        check(f"{b} ≥ 1.2× PyTorch autocast-bf16: {s[b]['ratio']:.2f}×", [b], lambda x: x["ratio"] >= 1.2)
    if b in s and wb in s:
        rel = s[wb]["qil"] / s[b]["qil"]
        check(f"ResNet-18 QIL W4A4 bf16 within 10% of qil's own bf16 step: {rel:.2f} of its images/s", [b, wb],
              lambda x, y: y["qil"] >= 0.9 * x["qil"])
    return out


def section(meta, rows):
    L = [BEGIN, "", f"Generated by `scripts/perf_report.py --pairs {meta['pairs']} --threads {meta['threads']}` "
         f"on {meta['date']} ({meta['wall_min']:.0f} min), qil at commit {meta.get('commit', '?')}.", "",
         f"- CPU: {meta['cpu']}, {meta['cpus']} CPUs; SIMD flags: `{' '.join(meta['simd']) or 'none'}`.",
         f"- Load average (1, 5, 15 min) before: {meta['load_before']}; after: {meta['load_after']}. "
         "Busy processes (> 20% CPU) at the start: " + (meta["busy"] or "none") + ".",
         f"- FMA peak (`scripts/fma_peak.sh {meta['threads']}`): **{meta['peak']:.1f} GFLOP/s** on "
         f"{meta['threads']} threads (best of 3 probes before the runs; {meta['peak_after']:.1f} after them).",
         f"- {meta['pairs']} interleaved pairs per configuration (qil, PyTorch, qil, ...), {meta['threads']} threads "
         "each; qil / PyTorch is the median of the per-pair ratios, images/s and peak memory the medians of each "
         "side. Peak memory is the process's resident high-water mark (ru_maxrss); PyTorch's includes the Python "
         "interpreter and its libraries. GFLOP/s counts convolutions and linear layers only.", "",
         "| configuration | qil img/s | PyTorch img/s | qil / PyTorch | per-pair range | qil GFLOP/s | % of FMA peak | "
         "qil peak MiB | PyTorch peak MiB |",
         "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        s = summary(r)
        L.append(f"| {r['name']} | {s['qil']:.2f} | {s['torch']:.2f} | **{s['ratio']:.2f}** | "
                 f"{s['ratio_lo']:.2f}–{s['ratio_hi']:.2f} | {s['gflops']:.1f} | "
                 f"{s['peak_pct']:.1f} | {s['rss_q']:.0f} | {s['rss_t']:.0f} |")
    L += ["", "Targets (docs/performance.md, \"Targets\"):", ""] + verdicts(rows)
    if not native_bf16(meta["simd"]):
        L.append("- bf16 rows: this CPU has no AVX512_BF16 (nor AMX), so there is no native bf16 to compare"
                 + ("; the bf16 rows above are qil's exact emulation (--bf16 on), not a speed claim."
                    if any(r.get("bf16") for r in rows) else "; FP32 rows only."))
    L += ["", END]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5, help="interleaved qil/PyTorch pairs per configuration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="*", help="only configurations whose name matches this glob")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                    help="ResNet-18 bf16 rows: where the CPU has native bf16 (auto), always, or never")
    ap.add_argument("--no-write", action="store_true", help="print the section, write no file")
    ap.add_argument("--qil", default=os.path.join(ROOT, "build", "qil"))
    ap.add_argument("--python", default="/usr/bin/python3", help="the interpreter that has python3-torch")
    ap.add_argument("--torch-ref", default=os.path.join(ROOT, "scripts", "torch_ref.py"))
    a = ap.parse_args()
    if a.pairs < 1 or a.threads < 1:
        raise SystemExit(f"perf_report: --pairs and --threads must be ≥ 1 (got {a.pairs}, {a.threads})")
    for path, what in ((a.qil, "qil binary (scripts/setup.sh builds it)"), (a.torch_ref, "PyTorch reference")):
        if not os.path.exists(path):
            raise SystemExit(f"perf_report: no {what} at {path}")
    if subprocess.run([a.python, "-c", "import torch, torchvision"], capture_output=True).returncode != 0:
        raise SystemExit(f"perf_report: {a.python} cannot import torch and torchvision "
                         "(apt-get install python3-torch python3-torchvision)")
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    busy = busy_processes()
    model, simd = cpu_info()
    t0, load_before = time.time(), loadavg()
    peak = fma_peak(a.threads)
    print(f"perf_report: FMA peak {peak:.1f} GFLOP/s on {a.threads} threads; SIMD {' '.join(simd)}", file=sys.stderr)
    rows = measure(a, peak, simd)
    peak_after = fma_peak(a.threads)
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip() or "?"
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit, "cpu": model, "cpus": os.cpu_count(),
            "simd": simd, "load_before": load_before, "load_after": loadavg(), "busy": busy, "peak": peak, "peak_after": peak_after,
            "pairs": a.pairs, "threads": a.threads, "wall_min": (time.time() - t0) / 60}
    text = section(meta, rows)
    print(text)
    if a.no_write:
        return
    write_json(RAW, {"meta": meta, "rows": rows})
    replace_section(DOC, BEGIN, END, text, fallback_heading="Measured (generated)")
    print(f"perf_report: wrote {os.path.relpath(DOC, ROOT)} and {os.path.relpath(RAW, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
