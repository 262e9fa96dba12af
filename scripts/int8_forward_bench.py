#!/usr/bin/env python3
"""Times qil's training step with the integer forward (`qil bench --int8-forward`) against its own FP32 and
fake-quantized W4A4 steps, interleaved round by round, and writes the table of docs/int8.md ("Integer forward in
training: speed").

Each round runs every configuration once (one `qil bench --json` process each, the same thread count), in the same
order; each configuration's figure is the median over rounds, and each ratio is the median of the per-round ratios
(so a slow stretch of the machine hits both sides of a ratio alike). Configurations: ResNet-18 @224 b32 and
ResNet-20 @32 b128 in FP32, QIL W4A4 (float forward) and QIL W4A4 --int8-forward; and, where the CPU has native
bf16 (AVX512_BF16 or AMX) or with --bf16 on, ResNet-18 in bf16 the same three ways. Also the peak resident memory of
each, and the CPU, its SIMD flags and the load average before and after, so a loaded run can be told from a quiet
one. Checks the targets of the integer forward and says met / not met.

Usage: scripts/int8_forward_bench.py [--rounds N] [--threads T] [--bf16 auto|on|off] [--only GLOB] [--no-write]
Benchmarks need a quiet machine: stop other work first (`uptime`). ~10 minutes on 2 cores with 5 rounds.
"""
import argparse, fnmatch, json, os, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perf_report import busy_processes, cpu_info, loadavg, med, native_bf16, replace_section, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "int8.md")
RAW = os.path.join(ROOT, "docs", "performance", "int8_forward.json")
BEGIN, END = "<!-- int8_forward_bench:begin -->", "<!-- int8_forward_bench:end -->"

# label, model, batch, image size, classes, timed steps
NETS = [("ResNet-18 @224 b32", "resnet18", 32, 224, 1000, 3), ("ResNet-20 @32 b128", "resnet20", 128, 32, 10, 6)]
MODES = [("FP32", 32, False), ("W4A4", 4, False), ("W4A4 int8-forward", 4, True)]


def has_vnni(simd):
    return any(x in ("avx512_vnni", "avx_vnni") or x.startswith("amx_int8") for x in simd)


def configurations(a, simd):
    """(name, net, bits, int8_forward, bf16) in the order each round runs them."""
    out = [(f"{net[0]} {m}", net, bits, i8, False) for net in NETS for m, bits, i8 in MODES]
    if a.bf16 == "on" or (a.bf16 == "auto" and native_bf16(simd)):
        out += [(f"{NETS[0][0]} bf16 {m}", NETS[0], bits, i8, True) for m, bits, i8 in MODES]
    return [c for c in out if fnmatch.fnmatch(c[0], a.only)]


def bench(a, net, bits, int8_forward, bf16):
    _, model, batch, res, classes, steps = net
    cmd = [a.qil, "bench", "--model", model, "--batch", str(batch), "--image-size", str(res), "--num-classes",
           str(classes), "--steps", str(steps), "--warmup", "2", "--repeat", "1", "--threads", str(a.threads),
           "--quant", str(bits), "--json", "--precision", "bf16" if bf16 else "fp32"]
    if int8_forward:
        cmd.append("--int8-forward")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"int8_forward_bench: {' '.join(cmd)} failed (exit {p.returncode}):\n{err[-2000:]}")
    j = json.loads(out.strip().splitlines()[-1])
    return {"img_s": j["img_per_s"], "forward_ms": j["forward_ms"], "backward_ms": j["backward_ms"],
            "rss_mib": j["peak_rss_mib"]}


def ratio(rows, num, den):
    """Median over rounds of num's images/s over den's (the same round), with the range."""
    r = [x["img_s"] / y["img_s"] for x, y in zip(rows[num], rows[den])]
    return med(r), min(r), max(r)


def verdicts(rows, simd):
    out = []
    r18, r20 = NETS[0][0], NETS[1][0]

    def check(text, ok):
        out.append(f"- {text}: **{'met' if ok else 'not met'}**")

    if f"{r18} W4A4 int8-forward" in rows and f"{r18} FP32" in rows:
        m, lo, hi = ratio(rows, f"{r18} W4A4 int8-forward", f"{r18} FP32")
        if has_vnni(simd):
            check(f"ResNet-18 QIL W4A4 with the integer forward ≥ 1.15× qil's own FP32 step (VNNI CPU): {m:.2f}× "
                  f"(rounds {lo:.2f}–{hi:.2f})", m >= 1.15)
        else:
            check(f"ResNet-18 QIL W4A4 with the integer forward ≥ 1.0× qil's own FP32 step (no VNNI): {m:.2f}× "
                  f"(rounds {lo:.2f}–{hi:.2f})", m >= 1.0)
    if f"{r18} bf16 W4A4 int8-forward" in rows and f"{r18} bf16 FP32" in rows:
        m, lo, hi = ratio(rows, f"{r18} bf16 W4A4 int8-forward", f"{r18} bf16 FP32")
        check(f"ResNet-18 QIL W4A4 bf16 with the integer forward ≥ 1.0× qil's own bf16 FP step: {m:.2f}× "
              f"(rounds {lo:.2f}–{hi:.2f})", m >= 1.0)
    for net in (r20, r18):
        best = max((f"{net} W4A4", f"{net} W4A4 int8-forward"), key=lambda n: med([x["img_s"] for x in rows[n]])
                   if n in rows else 0)
        if best in rows and f"{net} FP32" in rows:
            m, lo, hi = ratio(rows, best, f"{net} FP32")
            check(f"{net} QIL W4A4 ({'integer' if 'int8' in best else 'float'} forward, the faster) within 5% of "
                  f"qil's own FP32 step: {m:.2f} of its images/s (rounds {lo:.2f}–{hi:.2f})", m >= 0.95)
    return out


def section(meta, rows):
    L = [BEGIN, "", f"Generated by `scripts/int8_forward_bench.py --rounds {meta['rounds']} --threads "
         f"{meta['threads']}` on {meta['date']} ({meta['wall_min']:.0f} min), qil at commit {meta['commit']}.", "",
         f"- CPU: {meta['cpu']}, {meta['cpus']} CPUs; SIMD flags: `{' '.join(meta['simd']) or 'none'}`.",
         f"- Load average (1, 5, 15 min) before: {meta['load_before']}; after: {meta['load_after']}. Busy "
         "processes (> 20% CPU) at the start: " + (meta["busy"] or "none") + ".",
         f"- {meta['rounds']} rounds, every configuration once per round in the order below, {meta['threads']} "
         "threads; images/s, forward and backward ms per step and peak memory are medians over rounds; each ratio "
         "is the median of the per-round ratios against the same network's FP32 row (its range in brackets).", "",
         "| configuration | img/s | × FP32 (range) | forward ms | backward ms | peak MiB |", "|---|---:|---|---:|---:|---:|"]
    for name, rs in rows.items():
        net = name.split(" W4A4")[0].split(" FP32")[0]
        base = f"{net} FP32"
        m, lo, hi = ratio(rows, name, base) if base in rows else (float("nan"),) * 3
        L.append(f"| {name} | {med([x['img_s'] for x in rs]):.2f} | **{m:.2f}** ({lo:.2f}–{hi:.2f}) | "
                 f"{med([x['forward_ms'] for x in rs]):.1f} | {med([x['backward_ms'] for x in rs]):.1f} | "
                 f"{med([x['rss_mib'] for x in rs]):.0f} |")
    L += ["", "Targets:", ""] + verdicts(rows, meta["simd"])
    if not has_vnni(meta["simd"]):
        L.append("- This CPU has no VNNI: the 1.15× target is for CPUs with it; the rows above hold it to 1.0×.")
    if not native_bf16(meta["simd"]):
        L.append("- No native bf16 on this CPU (AVX512_BF16 or AMX): no bf16 rows (--bf16 on runs the emulation, "
                 "which is no speed claim).")
    L += ["", END]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="*", help="only configurations whose name matches this glob")
    ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--no-write", action="store_true", help="print the section, write no file")
    ap.add_argument("--qil", default=os.path.join(ROOT, "build", "qil"))
    a = ap.parse_args()
    if a.rounds < 1 or a.threads < 1:
        raise SystemExit(f"int8_forward_bench: --rounds and --threads must be ≥ 1 (got {a.rounds}, {a.threads})")
    if not os.path.exists(a.qil):
        raise SystemExit(f"int8_forward_bench: no qil binary at {a.qil} (scripts/setup.sh builds it)")
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    busy = busy_processes()
    model, simd = cpu_info()
    configs = configurations(a, simd)
    if not configs:
        raise SystemExit(f"int8_forward_bench: no configuration matches --only {a.only}")
    t0, load_before = time.time(), loadavg()
    rows = {c[0]: [] for c in configs}
    for i in range(a.rounds):
        for name, net, bits, i8, bf16 in configs:
            r = bench(a, net, bits, i8, bf16)
            rows[name].append(r)
            print(f"round {i + 1}/{a.rounds}: {name}: {r['img_s']:.2f} img/s (forward {r['forward_ms']:.1f} ms, "
                  f"backward {r['backward_ms']:.1f} ms); load {loadavg()}", file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    meta = {"rounds": a.rounds, "threads": a.threads, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_min": (time.time() - t0) / 60, "commit": commit, "cpu": model, "cpus": os.cpu_count(),
            "simd": simd, "load_before": load_before, "load_after": loadavg(), "busy": busy}
    text = section(meta, rows)
    print(text)
    if a.no_write:
        return
    write_json(RAW, {"meta": meta, "rows": rows})
    replace_section(DOC, BEGIN, END, text)


if __name__ == "__main__":
    main()
