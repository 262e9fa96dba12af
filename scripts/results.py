#!/usr/bin/env python3
"""Runs the QIL experiments on ResNet-20 / Fashion-MNIST and regenerates docs/results.md from them.

Resumable across sittings: a finished run (a `done` file in its folder) is never repeated; an unfinished one
continues from its last checkpoint (`qil train --resume`). The document is rewritten after every run, from
whatever has finished, so it can be committed at any point. Checkpoints stay in the runs folder.

Usage: scripts/results.py [--list] [--doc-only] [--only PATTERN] [--seeds 0,1]
Environment: QIL (the binary, default build/qil), QIL_RESULTS (runs folder, default runs/results),
QIL_THREADS (--threads), QIL_DIGITS (MNIST digits folder, default ../shared/data/mnist-digits).
Standard library only.
"""
import argparse
import csv
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QIL = os.environ.get("QIL", os.path.join(ROOT, "build", "qil"))
R = os.environ.get("QIL_RESULTS", os.path.join(ROOT, "runs", "results"))
DIGITS = os.environ.get("QIL_DIGITS", os.path.join(ROOT, "..", "shared", "data", "mnist-digits"))
DOC = os.path.join(ROOT, "docs", "results.md")
DATA_DIR = os.path.join(ROOT, "docs", "results")

MODEL = ["--model", "resnet20", "--batch", "128"]
FP_EPOCHS = 8
Q_LR = "0.01"  # base LR of every quantized stage (cosine within the stage)
E = 2  # epochs per quantized stage
PAPER = ["--quant-recipe", "paper", "--quant-lr-scale", "0.01"]

# The paper's ImageNet ResNet-18 top-1 (DESIGN §7).
PAPER_FP = 70.2
PAPER_PROG = {5: 70.4, 4: 70.1, 3: 69.2, 2: 65.7}
PAPER_DIRECT2 = 56.0
PAPER_QONLY = {5: 69.4, 4: 68.0, 3: 62.0, 2: 20.9}
# ResNet-18 W/A at 4/3/2 bits: LSQ (Esser et al., ICLR 2020) and PACT (as reported in the QIL paper).
PAPER_LSQ = {4: 71.1, 3: 70.2, 2: 67.6}
PAPER_PACT = {4: 69.2, 3: 68.1, 2: 64.4}


def fp_ckpt():
    return os.path.join(R, "fp-s0", "best.ckpt")


def plan(seeds):
    """Every run, in the order they are run (most telling first). kind: train | eval."""
    runs = [dict(name="fp-s0", kind="train", args=MODEL + ["--epochs", str(FP_EPOCHS), "--lr", "0.1", "--seed", "0"])]
    init = ["--init", fp_ckpt(), "--lr", Q_LR]

    # The runs before the "wc" ones were made when calibration defaulted to max|w| and the 99.9th percentile; they
    # name those rules, so that they run the same now that qil train defaults to mse.
    OLD_CALIB = ["--weight-calib", "max", "--act-calib", "percentile"]

    def q(name, *args, seed=0):
        rules = [] if "--weight-calib" in args else OLD_CALIB
        runs.append(dict(name=f"{name}-s{seed}", kind="train",
                         args=MODEL + init + ["--seed", str(seed)] + list(args) + rules))

    for b in (2, 3):  # what learning the intervals is worth, 2 epochs direct from FP, two seeds first
        for s in seeds:
            q(f"abl-w{b}-frozen", "--stages", str(b), "--epochs", str(E), "--freeze-intervals", seed=s)
            q(f"abl-w{b}-learned", "--stages", str(b), "--epochs", str(E), seed=s)
    s0 = seeds[0]
    q("abl-w2-act100", "--stages", "2", "--epochs", str(E), "--act-quant-lr-scale", "100", seed=s0)
    for s in seeds:
        q("prog", "--stages", "5,4,3,2", "--stage-epochs", str(E), seed=s)
        if s == s0:
            for b in (5, 4, 3, 2):
                runs.append(dict(name=f"calib-w{b}", kind="eval", args=["--quant", str(b)] + OLD_CALIB))
        for b, ep in ((4, 2 * E), (3, 3 * E)):  # same epochs as the progressive path to that width
            q(f"direct-w{b}", "--stages", str(b), "--epochs", str(ep), seed=s)
        if s == s0:  # quantizer-only and other-data runs are short: before the 8-epoch direct W2A2
            for b in (4, 2):
                q(f"qonly-w{b}-qil", "--stages", str(b), "--epochs", "1", "--freeze-weights", seed=s)
            q("qonly-w4-teacher", "--stages", "4", "--epochs", "1", "--freeze-weights", "--targets", "teacher", seed=s)
            q("digits-w4", "--stages", "4", "--epochs", "1", "--freeze-weights", "--targets", "teacher",
              "--data", "idx", "--data-dir", DIGITS, "--val-size", "1000", "--eval-data", "fashion-mnist", seed=s)
        q("direct-w2", "--stages", "2", "--epochs", str(4 * E), seed=s)
        if s == s0:
            for b in (5, 3):
                q(f"qonly-w{b}-qil", "--stages", str(b), "--epochs", "1", "--freeze-weights", seed=s)
        for b in (2, 3):
            q(f"abl-w{b}-gamma1", "--stages", str(b), "--epochs", str(E), "--fix-gamma", seed=s)
        if s == s0:
            for b in (4, 2, 5, 3):
                q(f"qonly-w{b}-paper", "--stages", str(b), "--epochs", "1", "--freeze-weights", *PAPER, seed=s)
        for b in (2, 3):
            q(f"abl-w{b}-paper", "--stages", str(b), "--epochs", str(E), *PAPER, seed=s)
        if s == s0:  # QIL's peers on the same schedule as abl-w*-learned (QIL's own rows at 3 and 2 bits)
            q("abl-w4-learned", "--stages", "4", "--epochs", str(E), seed=s)
            for kind in ("lsq", "pact", "dorefa"):
                for b in (4, 3, 2):
                    q(f"cmp-{kind}-w{b}", "--stages", str(b), "--epochs", str(E), "--quantizer", kind, seed=s)
        for b in (3, 2):
            if not (s == s0 and b == 2):
                q(f"abl-w{b}-act100", "--stages", str(b), "--epochs", str(E), "--act-quant-lr-scale", "100", seed=s)
        # Weight intervals from the least-squares clip point against max|w| (--weight-calib), both from the
        # same full-precision network (the FP run was repeated on a later binary: "wc" runs start from that one).
        # "mseact": activation intervals from their least-squares clip point too (--act-calib mse).
        MSEACT = ["--weight-calib", "mse", "--act-calib", "mse"]
        if s == s0:
            for b in (2, 3):
                for how in ("max", "mse"):
                    runs.append(dict(name=f"calib-wc-w{b}-{how}", kind="eval",
                                     args=["--quant", str(b), "--weight-calib", how]))
                runs.append(dict(name=f"calib-wc-w{b}-mseact", kind="eval", args=["--quant", str(b)] + MSEACT))
        for b in (2, 3):
            if b == 2:
                for how in ("mse", "max"):
                    q(f"wc-w{b}-{how}", "--stages", str(b), "--epochs", str(E), "--weight-calib", how, seed=s)
            q(f"wc-w{b}-mseact", "--stages", str(b), "--epochs", str(E), *MSEACT, seed=s)
            # Does learning still beat hand-set intervals when the hand-set ones start better?
            q(f"wc-w{b}-mseact-frozen", "--stages", str(b), "--epochs", str(E), *MSEACT, "--freeze-intervals", seed=s)
            if b == 3:
                for how in ("max", "mse"):
                    q(f"wc-w{b}-{how}", "--stages", str(b), "--epochs", str(E), "--weight-calib", how, seed=s)
            if s == s0:  # quantizer-only from the better start (weights and BatchNorm frozen, 1 epoch)
                for bb in ((2, 3) if b == 2 else ()):
                    q(f"wc-qonly-w{bb}-mseact", "--stages", str(bb), "--epochs", "1", "--freeze-weights", *MSEACT, seed=s)
            if b == 2:
                q("wc-prog-mseact", "--stages", "5,4,3,2", "--stage-epochs", str(E), *MSEACT, "--recalibrate-weights",
                  "--recalibrate-activations", seed=s)
    # bf16 against fp32 (--precision), same seed and binary: the full-precision network from scratch, and W4A4
    # from the fp32 network (fp-s0). On a CPU without AVX512_BF16 bf16 runs as its exact emulation.
    for prec in ("fp32", "bf16"):
        runs.append(dict(name=f"bf16-fp-{prec}-s0", kind="train",
                         args=MODEL + ["--epochs", str(FP_EPOCHS), "--lr", "0.1", "--seed", "0", "--precision", prec]))
        runs.append(dict(name=f"bf16-w4-{prec}-s0", kind="train",
                         args=MODEL + init + ["--seed", "0", "--stages", "4", "--epochs", str(E), "--precision", prec]))
    return runs


def status(run):
    d = os.path.join(R, run["name"])
    # The full-precision checkpoint must be on this machine for the runs that start from it.
    if run["name"] in store() and run["name"] != "fp-s0":
        return "done"
    if run["kind"] == "eval":
        return "done" if os.path.exists(d + ".json") else "todo"
    if os.path.exists(os.path.join(d, "done")):
        return "done"
    return "partial" if os.path.exists(os.path.join(d, "last.ckpt")) else "todo"


def threads():
    t = os.environ.get("QIL_THREADS")
    return ["--threads", t] if t else []


# SIGTERM (a stop of the process group) reaches the running `qil train` too, which saves its last checkpoint and
# exits; the driver only notes it, so that the run's wall time is still written before it stops.
STOP = {"requested": False}


def on_sigterm(signum, frame):
    STOP["requested"] = True


def run_timed(cmd, d, poll=30):
    """Runs `qil train`, adding its wall time to d/wall_s every 30 s and at the end, so that a driver killed
    outright (SIGKILL, a lost machine) loses at most 30 s of a resumed run's total."""
    wall_file = os.path.join(d, "wall_s")
    prev = float(open(wall_file).read()) if os.path.exists(wall_file) else 0.0
    t0 = time.time()

    def note():
        if os.path.isdir(d):
            with open(wall_file + ".tmp", "w") as f:
                f.write(f"{prev + time.time() - t0:.0f}")
            os.replace(wall_file + ".tmp", wall_file)

    with open(d + ".log", "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while True:
            try:
                code = proc.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                note()
    note()
    return code


def execute(run):
    d = os.path.join(R, run["name"])
    st = status(run)
    if st == "done":
        return
    if STOP["requested"]:
        raise SystemExit("results: stopped")
    if run["kind"] == "eval":
        cmd = [QIL, "eval", fp_ckpt(), "--json", "--progress", "none"] + threads() + run["args"]
        print(f"== {run['name']}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        with open(d + ".json", "w") as f:
            f.write(out)
        return
    if st == "partial":
        cmd = [QIL, "train", "--resume", d, "--progress", "lines"] + threads()
    else:
        shutil.rmtree(d, ignore_errors=True)
        cmd = [QIL, "train", "--out", d, "--progress", "lines"] + threads() + run["args"]
    print(f"== {run['name']}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    code = run_timed(cmd, d)
    if STOP["requested"]:
        raise SystemExit(f"results: stopped during {run['name']} (its last checkpoint continues it next time)")
    if code != 0:
        raise SystemExit(f"results: {run['name']} failed (exit {code}); see {d}.log")
    open(os.path.join(d, "done"), "w").close()


# ---- reading runs ----------------------------------------------------------------------------------------

# What finished runs produced is also kept in docs/results/finished.json (committed), so the document can be
# rebuilt on a machine that no longer has the run folders: a local finished run wins over the stored copy.
FINISHED = os.path.join(DATA_DIR, "finished.json")
_store = None


def store():
    global _store
    if _store is None:
        _store = json.load(open(FINISHED)) if os.path.exists(FINISHED) else {}
    return _store


def slim(record):
    """An intervals.jsonl record with only what the document reads."""
    out = {k: record.get(k) for k in ("layer", "stage", "stage_name", "epoch")}
    for side, keys in (("weight", ("c", "d", "gamma", "pruned_fraction", "clipped_fraction")), ("activation", ("c", "d"))):
        st = record.get(side)
        out[side] = {k: st.get(k) for k in keys} if st else None
    return out


def remember(name):
    """Copies a finished run's metrics, interval records (stage starts and ends) and wall time into the store."""
    d = os.path.join(R, name)
    if name.startswith("calib-"):
        if os.path.exists(d + ".json"):
            store()[name] = {"eval": json.load(open(d + ".json"))}
        return
    if not os.path.exists(os.path.join(d, "done")):
        return
    with open(os.path.join(d, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    last = {}
    for r in rows:
        last[int(r["stage"])] = max(last.get(int(r["stage"]), 0), int(r["epoch"]))
    recs = []
    p = os.path.join(d, "intervals.jsonl")
    if os.path.exists(p):
        for line in open(p):
            if line.strip():
                j = json.loads(line)
                if j["epoch"] == 0 or j["epoch"] == last.get(j["stage"]):
                    recs.append(slim(j))
    wf = os.path.join(d, "wall_s")
    if name == "fp-s0" and "fp-s0" in store() and "fp-s0-first" not in store() and store()["fp-s0"]["metrics"] != rows:
        store()["fp-s0-first"] = store()["fp-s0"]  # the network the earlier runs started from
    store()[name] = {"metrics": rows, "intervals": recs, "wall_s": float(open(wf).read()) if os.path.exists(wf) else None}


def save_store():
    data = store()  # read before the file is rewritten
    os.makedirs(DATA_DIR, exist_ok=True)
    with open(FINISHED + ".tmp", "w") as f:
        json.dump(data, f, indent=0, sort_keys=True)
        f.write("\n")
    os.replace(FINISHED + ".tmp", FINISHED)


def metrics(name):
    return store().get(name, {}).get("metrics")


def final_test(name):
    m = metrics(name)
    return float(m[-1]["test_top1"]) if m else None


def stage_tests(name):
    """Test top-1 at the end of each stage, by stage name."""
    m = metrics(name)
    if not m:
        return {}
    out = {}
    for row in m:
        out[row["stage_name"]] = float(row["test_top1"])
    return out


def wall(name):
    return store().get(name, {}).get("wall_s")


def calib_test(b, name="calib-w{b}"):
    e = store().get(name.format(b=b), {}).get("eval")
    return e["top1"] if e else None


def intervals(name):
    return store().get(name, {}).get("intervals", [])


def mean_spread(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    return m, (max(vals) - min(vals)) / 2 if len(vals) > 1 else None, len(vals)


def fmt(values):
    m, sp, n = mean_spread(values)
    if m is None:
        return "(not run yet)"
    return f"{m:.2f}" if sp is None else f"{m:.2f} ± {sp:.2f} (n={n})"


def over_seeds(pattern, seeds, fn=final_test):
    return [fn(pattern.format(s=s)) for s in seeds]


# ---- the document ----------------------------------------------------------------------------------------

def movement_rows(name):
    """Per layer and stage: values at the stage's start (epoch 0) and end, pruned/clipped shares at the end."""
    rows = intervals(name)
    start, end = {}, {}
    for j in rows:
        key = (j["stage"], j["stage_name"], j["layer"])
        if j["epoch"] == 0:
            start[key] = j
        else:
            end[key] = j
    out = []
    for key in sorted(end, key=lambda k: (k[0], k[2])):
        e, s = end[key], start.get(key)
        w, a = e.get("weight") or {}, e.get("activation") or {}
        ws, as_ = (s or {}).get("weight") or {}, (s or {}).get("activation") or {}
        out.append(dict(stage=key[1], layer=key[2], w_c0=ws.get("c"), w_c=w.get("c"), w_d0=ws.get("d"), w_d=w.get("d"),
                        gamma=w.get("gamma"), pruned=w.get("pruned_fraction"), clipped=w.get("clipped_fraction"),
                        a_c0=as_.get("c"), a_c=a.get("c"), a_d0=as_.get("d"), a_d=a.get("d")))
    return out


def pct(a, b):
    return None if a in (None, 0) or b is None else 100.0 * (b - a) / abs(a)


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def movement_summary(name):
    """Median |relative change| of c_W, c_X, d_X and γ over layers, per stage."""
    by_stage = {}
    for r in movement_rows(name):
        by_stage.setdefault(r["stage"], []).append(r)
    out = []
    for st, rs in by_stage.items():
        out.append((st, median([abs(pct(r["w_c0"], r["w_c"]) or 0) for r in rs]),
                    median([abs(pct(r["a_c0"], r["a_c"]) or 0) for r in rs]),
                    median([abs(pct(r["a_d0"], r["a_d"]) or 0) for r in rs]),
                    median([abs((r["gamma"] or 1) - 1) for r in rs]),
                    sum(1 for r in rs if r["w_c"] is not None and r["w_d"] is not None and r["w_c"] - r["w_d"] > 1e-4 * r["w_d"]),
                    len(rs), median([r["pruned"] for r in rs])))
    return out


def trajectory_svg(name, path):
    """c_W and c_X of every layer over training, relative to calibration (one line per layer)."""
    rows = intervals(name)
    m = metrics(name) or []
    glob = {(int(r["stage"]), int(r["epoch"])): int(r["global_epoch"]) for r in m}
    series = {}
    for j in rows:
        g = glob.get((j["stage"], j["epoch"]))
        if g is None and j["epoch"] == 0:
            g = glob.get((j["stage"], 1), 1) - 1
        if g is None:
            continue
        for side, key in (("weight", "w"), ("activation", "a")):
            st = j.get(side)
            if st:
                series.setdefault((key, j["layer"]), []).append((g, st["c"]))
    if not series:
        return False
    W, H, pad = 900, 340, 50
    panels = [("w", "weight interval c_W / calibration"), ("a", "activation interval c_X / calibration")]
    xmax = max(g for s in series.values() for g, _ in s) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">']
    pw = (W - 3 * pad) / 2
    for k, (key, title) in enumerate(panels):
        x0 = pad + k * (pw + pad)
        ratios = [v / s[0][1] for (kk, _), s in series.items() if kk == key for _, v in s if s[0][1]]
        lo, hi = min(ratios + [1.0]), max(ratios + [1.0])
        lo, hi = lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9)
        sx = lambda g: x0 + pw * g / xmax
        sy = lambda r: H - pad - (H - 2 * pad) * (r - lo) / (hi - lo)
        parts.append(f'<text x="{x0}" y="{pad - 20}" font-weight="bold">{title}</text>')
        parts.append(f'<rect x="{x0}" y="{pad}" width="{pw}" height="{H - 2 * pad}" fill="none" stroke="#999"/>')
        for t in range(5):
            r = lo + (hi - lo) * t / 4
            parts.append(f'<text x="{x0 - 4}" y="{sy(r) + 4}" text-anchor="end">{r:.2f}</text>')
        for g in range(0, xmax + 1, max(1, xmax // 8)):
            parts.append(f'<text x="{sx(g)}" y="{H - pad + 14}" text-anchor="middle">{g}</text>')
        parts.append(f'<text x="{x0 + pw / 2}" y="{H - 12}" text-anchor="middle">epoch (all stages)</text>')
        parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{sy(1)}" y2="{sy(1)}" stroke="#bbb" stroke-dasharray="4 3"/>')
        for i, ((kk, layer), s) in enumerate(sorted(series.items())):
            if kk != key or not s[0][1]:
                continue
            pts = " ".join(f"{sx(g):.1f},{sy(v / s[0][1]):.1f}" for g, v in sorted(s))
            hue = (i * 47) % 360
            parts.append(f'<polyline fill="none" stroke="hsl({hue},60%,45%)" stroke-width="1.3" points="{pts}">'
                         f'<title>{layer}</title></polyline>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    return True


def write_data_files(runs):
    os.makedirs(DATA_DIR, exist_ok=True)
    with open(os.path.join(DATA_DIR, "runs.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "stage", "epoch", "val_top1", "test_top1", "img_per_s", "wall_s_total"])
        for r in runs:
            m = metrics(r["name"]) if r["kind"] == "train" else None
            for row in m or []:
                w.writerow([r["name"], row["stage_name"], row["epoch"], row["val_top1"], row["test_top1"],
                            row["img_per_s"], wall(r["name"])])
    with open(os.path.join(DATA_DIR, "layers.csv"), "w", newline="") as f:
        cols = ["run", "stage", "layer", "w_c0", "w_c", "w_d0", "w_d", "gamma", "pruned", "clipped", "a_c0", "a_c",
                "a_d0", "a_d"]
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in runs:
            if r["kind"] == "train" and metrics(r["name"]):
                for row in movement_rows(r["name"]):
                    w.writerow(dict(run=r["name"], **row))


def cpu_line():
    model, flags = "?", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(isa)}"


def verdict(ok):
    return "met" if ok else "not met"


def bf16_section(a):
    """bf16 against fp32, same seed and binary (the runs bf16-*)."""
    pairs = [(label, final_test(f"bf16-{k}-fp32-s0"), final_test(f"bf16-{k}-bf16-s0"))
             for k, label in (("fp", f"FP, {FP_EPOCHS} epochs from scratch"), ("w4", f"W4A4, {E} epochs from fp-s0"))]
    a("## bf16 training against fp32")
    a("")
    a("`--precision bf16` (docs/performance.md, bf16): convolutions and linear layers read their inputs, weights and")
    a("output gradients in bf16 and sum in f32; quantized layers are fed their integer levels. Same seed, binary and")
    a(f"schedule as the fp32 row beside it. Machine: {cpu_line()}; on a CPU without AVX512_BF16 bf16 runs as its")
    a("exact emulation (the same numerics as native bf16, no faster than fp32).")
    a("")
    a("| network | fp32 | bf16 | bf16 − fp32 | target |")
    a("|---|---:|---:|---:|---|")
    for label, f, b in pairs:
        if f is None or b is None:
            a(f"| {label} | {'—' if f is None else f'{f:.2f}'} | {'—' if b is None else f'{b:.2f}'} | — | pending |")
        else:
            a(f"| {label} | {f:.2f} | {b:.2f} | {b - f:+.2f} | within 0.5: **{verdict(abs(b - f) <= 0.5)}** |")
    a("")


def document(runs, seeds):
    S = seeds
    # When fp-s0 was trained again (a later binary), the earlier runs started from the first network: it stays
    # the reference of every section but the weight-calibration one.
    fp_again = final_test("fp-s0")
    fp = final_test("fp-s0-first") if "fp-s0-first" in store() else fp_again
    L = []
    a = L.append
    a("# Results: QIL on ResNet-20 / Fashion-MNIST")
    a("")
    a("Regenerated by `scripts/results.py` (resumable; `--list` shows what has run). Every number is test top-1 (%) on")
    a("the 10,000 Fashion-MNIST test images after the run's last epoch; a seeded hold-out of 5,000 training images picks")
    a("`best` checkpoints. Mean ± half the range over the seeds that have finished (n = how many); seeds change the data")
    a("order of the quantized runs, which all start from one full-precision network (seed 0).")
    a(f"Machine: {cpu_line()}. Per-run wall times are in `docs/results/runs.csv` (the machine was shared with")
    a("builds while these ran, so they are not speed figures).")
    a("")
    a("Schedule: full precision " + f"{FP_EPOCHS} epochs at LR 0.1; every quantized stage {E} epochs at LR {Q_LR}")
    a("(cosine within each stage, SGD momentum 0.9, batch 128, crop + flip); the first conv and the last linear")
    a("stay full precision; intervals from 8 calibration batches, [0, max|w|] for weights and [0, 99.9th percentile]")
    a("for activations unless a row says otherwise (`qil train` now defaults to mse, see \"Calibration\"); quantizer")
    a("gradients balanced per layer")
    a("(`--quant-grad-scale sqrt`) unless a row says otherwise. A few epochs per stage, not the paper's schedule.")
    a("")
    a("## Full precision and progressive quantization")
    a("")
    a("| network | ours | paper (ImageNet ResNet-18) |")
    a("|---|---|---|")
    a(f"| full precision | {fmt([fp])} | {PAPER_FP} |")
    for b in (5, 4, 3, 2):
        a(f"| progressive → W{b}A{b} | {fmt(over_seeds('prog-s{s}', S, lambda n: stage_tests(n).get(f'w{b}a{b}')))} | {PAPER_PROG[b]} |")
    a("")
    a("## Direct fine-tuning against progressive, same epochs")
    a("")
    a("| width | direct from FP | progressive | epochs | paper direct / progressive |")
    a("|---|---|---|---|---|")
    for b, ep in ((4, 2 * E), (3, 3 * E), (2, 4 * E)):
        paper = f"{PAPER_DIRECT2} / {PAPER_PROG[2]}" if b == 2 else f"— / {PAPER_PROG[b]}"
        a(f"| W{b}A{b} | {fmt(over_seeds(f'direct-w{b}' + '-s{s}', S))} | "
          f"{fmt(over_seeds('prog-s{s}', S, lambda n: stage_tests(n).get(f'w{b}a{b}')))} | {ep} | {paper} |")
    a("")
    a("## Learned intervals against intervals frozen at calibration")
    a("")
    a(f"{E} epochs of direct fine-tuning from the FP network; weights train in every row. `frozen`: c, d, γ stay at")
    a("calibration (`--freeze-intervals`); `learned`: the default; `act ×100`: activation intervals at 100× the")
    a("quantizer LR (`--act-quant-lr-scale 100`); `γ = 1`: `--fix-gamma`; `paper recipe`: raw interval gradients and")
    a("output scales fixed at their least-squares fit, quantizer LR 1/100 of the weights' (`--quant-recipe paper")
    a("--quant-lr-scale 0.01`).")
    a("")
    a("| width | frozen | learned | act ×100 | γ = 1 | paper recipe | calibration only, no training |")
    a("|---|---|---|---|---|---|---|")
    for b in (3, 2):
        cells = [fmt(over_seeds(f"abl-w{b}-{v}" + "-s{s}", S)) for v in ("frozen", "learned", "act100", "gamma1", "paper")]
        c = calib_test(b)
        a(f"| W{b}A{b} | " + " | ".join(cells) + f" | {c:.2f} |" if c is not None else f"| W{b}A{b} | " + " | ".join(cells) + " | (not run yet) |")
    a("")
    for b in (2, 3):
        lm, ls, ln = mean_spread(over_seeds(f"abl-w{b}-learned" + "-s{s}", S))
        fm, fs, fn = mean_spread(over_seeds(f"abl-w{b}-frozen" + "-s{s}", S))
        if lm is not None and fm is not None:
            spread = max(ls or 0, fs or 0)
            holds = lm - fm > spread if (ls is not None and fs is not None) else lm > fm
            a(f"W{b}A{b}: learned − frozen = {lm - fm:+.2f} points ({min(ln, fn)} seed(s)). The paper's premise, that"
              f" intervals learned from the task loss beat hand-set ones, {'holds' if holds else 'does not hold'}"
              f" here at {b} bits{'' if ls is not None and fs is not None else ' (one seed so far)'}.")
            a("")
    a("## Calibration: max|w| and the 99.9th percentile against the least-squares clip point")
    a("")
    a("A new weight interval is [0, p]. `max` (the rule of every other section) takes p = max|w|; at 2 bits (levels −1, 0, 1) that rounds")
    a("every |w| below max|w|/2 to zero, most of a layer. `mse` (`--weight-calib mse`) takes the p whose quantized")
    a("weights, scaled by their least-squares factor, are closest to the weights (docs/qil.md). Training rows:")
    a(f"{E} epochs direct from FP, or {E} per progressive stage.")
    a("")
    a("`+ act mse` also sets the activation intervals by the same rule (`--act-calib mse`) instead of the 99.9th")
    a("percentile; `intervals frozen` keeps those intervals through training (`--freeze-intervals`), the learned-vs-")
    a("hand-set comparison from the better start. The last column also calibrates the weight and activation intervals")
    a("again at each new width (`--recalibrate-weights --recalibrate-activations`).")
    a("")
    a("| width | calibration only: max | mse | mse + act mse | trained: max | mse | mse + act mse | mse + act mse, intervals frozen | progressive: max, inherited | mse + act mse, recalibrated per width |")
    a("|---|---|---|---|---|---|---|---|---|---|")
    for b in (5, 4, 3, 2):
        cells = []
        for how in ("max", "mse", "mseact"):
            c = calib_test(b, "calib-wc-w{b}-" + how)
            cells.append(f"{c:.2f}" if c is not None else "—" if b > 3 else "(not run yet)")
        for how in ("max", "mse", "mseact", "mseact-frozen"):
            cells.append(fmt(over_seeds(f"wc-w{b}-{how}" + "-s{s}", S)) if b < 4 else "—")
        cells += [fmt(over_seeds(f"{p}" + "-s{s}", S, lambda n: stage_tests(n).get(f"w{b}a{b}"))) for p in ("prog", "wc-prog-mseact")]
        a(f"| W{b}A{b} | " + " | ".join(cells) + " |")
    a("")
    qo = [final_test(f"wc-qonly-w{b}-mseact-s0") for b in (2, 3)]
    if any(v is not None for v in qo):
        a("Quantizer-only (weights and BatchNorm frozen, 1 epoch) from the mse + act mse start: " + ", ".join(
            f"W{b}A{b} {fmt([v])} (calibration only {calib_test(b, 'calib-wc-w{b}-mseact') or float('nan'):.2f}; "
            f"from max/percentile on the first FP network {fmt([final_test(f'qonly-w{b}-qil-s0')])})" for b, v in zip((2, 3), qo)) + ".")
        a("")
    if "fp-s0-first" in store():
        a(f"Every column but `progressive, max, inherited` starts from the full-precision network trained again on a")
        a(f"later binary ({fmt([fp_again])}; the first one, which every other section starts from, reached {fp:.2f}).")
        a("The `progressive, max, inherited` column's seed 0 comes from the first network, seed 1 from the second.")
        a("")
    a("## QIL and its peers: LSQ, PACT, DoReFa")
    a("")
    a(f"Each quantizer on the same schedule ({E} epochs of direct fine-tuning from the FP network, LR {Q_LR}, the")
    a("same seeds and data order); `--quantizer lsq|pact|dorefa` (PACT: learned activation clip α with DoReFa")
    a("weights). Published ImageNet ResNet-18 top-1 beside them (QIL's and PACT's from the QIL paper, LSQ's from")
    a("its own).")
    a("")
    a("| width | QIL | LSQ | PACT | DoReFa | paper: QIL / LSQ / PACT |")
    a("|---|---|---|---|---|---|")
    for b in (4, 3, 2):
        cells = [fmt(over_seeds(f"abl-w{b}-learned" + "-s{s}", S))]
        cells += [fmt(over_seeds(f"cmp-{k}-w{b}" + "-s{s}", S)) for k in ("lsq", "pact", "dorefa")]
        a(f"| W{b}A{b} | " + " | ".join(cells) + f" | {PAPER_PROG[b]} / {PAPER_LSQ[b]} / {PAPER_PACT[b]} |")
    a("")
    got = {k: {b: mean_spread(over_seeds(f"cmp-{k}-w{b}" + "-s{s}", S))[0] for b in (4, 3, 2)}
           for k in ("lsq", "pact", "dorefa")}
    got["qil"] = {b: mean_spread(over_seeds(f"abl-w{b}-learned" + "-s{s}", S))[0] for b in (4, 3, 2)}
    done = [b for b in (4, 3, 2) if all(got[k][b] is not None for k in got)]
    if done:
        # The seed-to-seed spread of QIL's own runs is the noise floor: a gap smaller than it is not a result.
        noise = max((mean_spread(over_seeds(f"abl-w{b}-learned" + "-s{s}", S))[1] or 0) for b in done)
        for b in done:
            q = got["qil"][b]
            a(f"- W{b}A{b}: QIL − PACT {q - got['pact'][b]:+.2f}, QIL − DoReFa {q - got['dorefa'][b]:+.2f}, "
              f"LSQ − QIL {got['lsq'][b] - q:+.2f} points.")
        a("")
        over = lambda k, b: got["qil"][b] > got[k][b] + noise
        beats = [b for b in done if over("pact", b) and over("dorefa", b)]
        lsq = [b for b in done if got["lsq"][b] > got["qil"][b] + noise]
        say = lambda bs: ", ".join(f"{b}" for b in bs) + " bits" if bs else "no width"
        a(f"Counting a gap as real only when it exceeds the largest seed spread of QIL's runs (±{noise:.2f}): "
          f"\"QIL beats PACT and DoReFa\" holds here at {say(beats)} of {say(done)} (QIL beats DoReFa at "
          f"{say([b for b in done if over('dorefa', b)])}, PACT at {say([b for b in done if over('pact', b)])}); "
          f"\"LSQ beats QIL\" holds at {say(lsq)}.")
        a("")
    a("## Quantizer-only training (weights and BatchNorm frozen), 1 epoch")
    a("")
    a("| width | calibration only | QIL recipe (balanced, learned scales) | paper recipe | paper (ImageNet) |")
    a("|---|---|---|---|---|")
    for b in (5, 4, 3, 2):
        c = calib_test(b)
        a(f"| W{b}A{b} | {'(not run yet)' if c is None else f'{c:.2f}'} | {fmt([final_test(f'qonly-w{b}-qil-s0')])} | "
          f"{fmt([final_test(f'qonly-w{b}-paper-s0')])} | {PAPER_QONLY[b]} |")
    a("")
    a("## Intervals trained on other data (W4A4, quantizer-only, 1 epoch, teacher targets)")
    a("")
    a("Trained toward the FP network's own predictions (`--targets teacher`), so that MNIST digits, whose labels")
    a("are another task, can train the intervals; evaluated on Fashion-MNIST test.")
    a("")
    a("| intervals from | test top-1 |")
    a("|---|---|")
    c4 = calib_test(4)
    a(f"| calibration only (Fashion-MNIST batches) | {'(not run yet)' if c4 is None else f'{c4:.2f}'} |")
    a(f"| Fashion-MNIST training images | {fmt([final_test('qonly-w4-teacher-s0')])} |")
    a(f"| MNIST digits (`../shared/data/mnist-digits`) | {fmt([final_test('digits-w4-s0')])} |")
    a("")
    a("## What the intervals learned")
    a("")
    a("Per stage of the progressive run and of the 2-bit ablation runs: the median over quantized layers of |Δc_W|,")
    a("|Δc_X|, |Δd_X| relative to")
    a("the stage's start and of |γ − 1|; the layers whose weight interval left c = d (a learned pruning interval);")
    a("the median share of weights pruned. Every layer's values are in `docs/results/layers.csv`.")
    a("")
    a("| run | stage | med \\|Δc_W\\| % | med \\|Δc_X\\| % | med \\|Δd_X\\| % | med \\|γ−1\\| | c > d | med pruned |")
    a("|---|---|---|---|---|---|---|---|")
    for name in (f"prog-s{S[0]}", f"abl-w2-learned-s{S[0]}", f"abl-w2-act100-s{S[0]}"):
        if metrics(name):
            for st, wc, ac, ad, g, cd, n, pr in movement_summary(name):
                f2 = lambda v, p=2: "—" if v is None else f"{v:.{p}f}"
                a(f"| {name} | {st} | {f2(wc)} | {f2(ac, 3)} | {f2(ad, 3)} | {f2(g, 3)} | {cd}/{n} | "
                  f"{'—' if pr is None else f'{100 * pr:.0f}%'} |")
    a("")
    if trajectory_svg(f"prog-s{S[0]}", os.path.join(DATA_DIR, "intervals-progressive.svg")):
        a("Trajectories of every layer's c over the progressive run, relative to its calibration value:")
        a("")
        a("![interval trajectories](results/intervals-progressive.svg)")
        a("")
    a("## Targets (ResNet-20 / Fashion-MNIST), met or not")
    a("")
    pm = lambda b: mean_spread(over_seeds("prog-s{s}", S, lambda n: stage_tests(n).get(f"w{b}a{b}")))[0]
    dm = lambda b: mean_spread(over_seeds(f"direct-w{b}" + "-s{s}", S))[0]
    checks = []
    if fp is not None and pm(4) is not None:
        checks.append((f"W4A4 ≥ FP − 0.3: {pm(4):.2f} vs {fp:.2f}", pm(4) >= fp - 0.3))
    if fp is not None and pm(3) is not None:
        checks.append((f"W3A3 ≥ FP − 0.8: {pm(3):.2f} vs {fp:.2f}", pm(3) >= fp - 0.8))
    if fp is not None and pm(2) is not None:
        checks.append((f"progressive W2A2 ≥ FP − 2.5: {pm(2):.2f} vs {fp:.2f}", pm(2) >= fp - 2.5))
    if pm(2) is not None and dm(2) is not None:
        checks.append((f"progressive W2A2 above direct W2A2: {pm(2):.2f} vs {dm(2):.2f}", pm(2) > dm(2)))
    for b in (3, 2):
        lm, ls, _ = mean_spread(over_seeds(f"abl-w{b}-learned" + "-s{s}", S))
        fm, fs, _ = mean_spread(over_seeds(f"abl-w{b}-frozen" + "-s{s}", S))
        if lm is not None and fm is not None:
            spread = max(ls or 0, fs or 0)
            sp = f"seed spread {spread:.2f}" if ls is not None and fs is not None else "one seed so far: no spread yet"
            checks.append((f"learned above frozen at W{b}A{b} by more than the seed spread: {lm:.2f} vs {fm:.2f} "
                           f"({sp})", lm - fm > spread))
    for b in (5, 4, 3, 2):
        j, qo = pm(b), final_test(f"qonly-w{b}-qil-s0")
        if j is not None and qo is not None:
            checks.append((f"joint training above quantizer-only at W{b}A{b}: {j:.2f} vs {qo:.2f}", j > qo))
    dg, fm4 = final_test("digits-w4-s0"), final_test("qonly-w4-teacher-s0")
    if dg is not None and fm4 is not None:
        checks.append((f"digits-trained intervals within 1 point of Fashion-MNIST-trained at W4A4: {dg:.2f} vs {fm4:.2f}",
                       abs(dg - fm4) <= 1.0))
    wp = mean_spread(over_seeds("wc-prog-mseact-s{s}", S, lambda n: stage_tests(n).get("w2a2")))[0]
    if wp is not None and fp_again is not None:
        checks.append((f"with mse calibration of both, recalibrated at each width: progressive W2A2 ≥ FP − 2.5: {wp:.2f} vs "
                       f"{fp_again:.2f} (the retrained FP network)", wp >= fp_again - 2.5))
        if dm(2) is not None:
            checks.append((f"with mse calibration of both, recalibrated at each width: progressive W2A2 above direct W2A2 "
                           f"(max, {4 * E} epochs, from the first FP network): {wp:.2f} vs {dm(2):.2f}", wp > dm(2)))
    for b in (3, 2):  # learned against frozen again, from the mse start (one FP network, the retrained one)
        lm, ls, ln = mean_spread(over_seeds(f"wc-w{b}-mseact" + "-s{s}", S))
        fm, fs, fn = mean_spread(over_seeds(f"wc-w{b}-mseact-frozen" + "-s{s}", S))
        if lm is not None and fm is not None:
            # one seed so far: the spread of the max-start learned-vs-frozen pairs stands in for it
            ref = max((mean_spread(over_seeds(f"abl-w{b}-{v}" + "-s{s}", S))[1] or 0) for v in ("learned", "frozen"))
            spread = max(ls or 0, fs or 0) if ls is not None and fs is not None else ref
            checks.append((f"from the mse start, learned above frozen at W{b}A{b} by more than the seed spread: "
                           f"{lm:.2f} vs {fm:.2f} (spread {spread:.2f}{'' if ls is not None else ', taken from the max-start pairs'})",
                           lm - fm > spread))
    for text, ok in checks:
        a(f"- **{verdict(ok)}**: {text}")
    if not checks:
        a("- (no finished runs yet)")
    a("")
    bf16_section(a)
    a("## Runs")
    a("")
    a("| run | status | command (after `qil train --out DIR`) | wall |")
    a("|---|---|---|---|")
    for r in runs:
        w = wall(r["name"]) if r["kind"] == "train" else None
        args = " ".join("$QIL_RESULTS" + x[len(R):] if x.startswith(R) else x for x in r["args"])
        cmd = ("`qil eval fp-s0/best.ckpt " + args + "`") if r["kind"] == "eval" else f"`{args}`"
        a(f"| {r['name']} | {status(r)} | {cmd} | {'' if w is None else f'{w / 60:.0f} min'} |")
    a("")
    with open(DOC, "w") as f:
        f.write("\n".join(L))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true", help="show the runs and their status, run nothing")
    ap.add_argument("--doc-only", action="store_true", help="rewrite docs/results.md from finished runs only")
    ap.add_argument("--only", default="*", help="run only the runs whose name matches this glob")
    ap.add_argument("--seeds", default="0,1", help="seeds of the quantized runs (comma list)")
    o = ap.parse_args()
    seeds = [int(s) for s in o.seeds.split(",")]
    runs = plan(seeds)
    os.makedirs(R, exist_ok=True)
    if o.list:
        for r in runs:
            print(f"{status(r):8} {r['name']}")
        return
    for r in runs:
        remember(r["name"])
    if not o.doc_only:
        signal.signal(signal.SIGTERM, on_sigterm)
        if not os.access(QIL, os.X_OK):
            raise SystemExit(f"results: no qil binary at {QIL} (build it with scripts/setup.sh, or set QIL)")
        for r in runs:
            if fnmatch.fnmatch(r["name"], o.only):
                execute(r)
                remember(r["name"])
                save_store()
                write_data_files(runs)
                document(runs, seeds)
    save_store()
    write_data_files(runs)
    document(runs, seeds)
    print(f"wrote {os.path.relpath(DOC, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
