#!/usr/bin/env python3
"""Launches the QIL experiments on ResNet-20 / Fashion-MNIST, one run at a time, and keeps their records.

What it does, and only this:
- builds the `qil` binary of one commit (`--commit`, default HEAD) from a clean `git archive` of it, so that a
  run's binary is exactly that commit whatever the work tree holds;
- runs the plan below in order, resumably: a finished run (a `done` file) is never repeated, an unfinished one
  continues from its last checkpoint (`qil train --resume`); the plan is read again after every run, so an edit
  to it takes effect at the next run;
- before each run writes `provenance.json` into its folder: the commit, the binary's SHA-256, the command, the
  starting checkpoint and its SHA-256, the CPU (model and SIMD flags), the thread count; `qil train` itself
  writes the resolved configuration (`config.toml`);
- after each run copies its small outputs (config.toml, metrics.csv, intervals.jsonl, provenance.json) into
  `docs/results/runs/<name>/`, which is committed (checkpoints never are).

The tables of docs/results.md come from `qil compare` over those folders: `scripts/results_doc.py`.

Usage: scripts/results.py [--list] [--json] [--only GLOB] [--seeds 0,1,2] [--commit REV] [--threads N]
Environment: QIL_RESULTS (runs folder, default runs/results). Standard library only.
"""
import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R = os.environ.get("QIL_RESULTS", os.path.join(ROOT, "runs", "results"))
RECORDS = os.path.join(ROOT, "docs", "results", "runs")

MODEL = ["--model", "resnet20", "--batch", "128"]
FP = ["--epochs", "8", "--lr", "0.1"]  # full precision: 8 epochs, cosine from 0.1
Q_LR = "0.01"  # base LR of every quantized stage (cosine within the stage)

# Each quantizer from its own documented start. QIL: least-squares clip points for weights and activations
# (docs/qil.md, "Calibration"). LSQ, PACT and DoReFa have their own initialization rules and read no
# calibration flag.
START = {
    "qil": ["--quantizer", "qil", "--weight-calib", "mse", "--act-calib", "mse"],
    "lsq": ["--quantizer", "lsq"],
    "pact": ["--quantizer", "pact"],
    "dorefa": ["--quantizer", "dorefa"],
}

# Two settings. "std": the first conv and the last linear stay full precision (the paper's rule), 2 epochs.
# "edge": they are quantized at the stage's width too, so that 2 bits cost several points and differences
# between methods have room to show; 4 epochs at 2 bits.
SETTINGS = {
    "std": dict(flags=["--first-last", "fp"], epochs={4: 2, 3: 2, 2: 2}),
    "edge": dict(flags=["--first-last", "same"], epochs={4: 2, 3: 3, 2: 4}),
}

# Ablations of QIL's own mechanisms: the flags each adds to QIL's default run.
ABLATIONS = {
    "learned": [],
    "frozen": ["--freeze-intervals"],  # c, d, gamma of every quantizer at calibration
    "gamma1": ["--fix-gamma"],  # weights' gamma pinned at 1
    "actfrozen": ["--freeze-act-intervals"],  # activation intervals at calibration, weight intervals learn
    "wfrozen": ["--freeze-weight-intervals"],  # weight intervals at calibration, activation intervals learn
    "noprune": ["--no-pruning"],  # weights' pruning point c - d held at 0: only the clipping point learns
    "paper": ["--quant-recipe", "paper", "--quant-lr-scale", "0.01"],  # raw gradients, the paper's interval LR
    # Intervals that move: c and d step relative to the interval's width (the default's per-layer 1/sqrt(N*q)
    # leaves the activation intervals within a few percent of calibration), so that "learned" gets a fair chance.
    "relative": ["--quant-grad-scale", "relative"],
}
DISTILL = ["--distill", "4", "--distill-weight", "0.5"]
PACT_MSE = ["--pact-calib", "mse"]  # PACT's α from the least-squares clip point, as QIL's activation intervals
INT8_FWD = ["--int8-forward"]  # the quantized layers' training forward in integers (docs/int8.md)
LSQ_SYM = ["--lsq-symmetric"]  # LSQ's weights on a symmetric grid: ternary at 2 bits, as QIL's


def fp_name(seed):
    return f"fp-s{seed}"


def fp_ckpt(seed):
    return os.path.join(R, fp_name(seed), "best.ckpt")


def plan(seeds):
    """Every run in the order it runs (the most telling first). A run: name, seed, args, base (the run it is a
    variant of) and delta (the flags it adds to base's): the plan's test checks that each variant's flags are
    exactly its base's plus its delta, so no flag is dropped or mislabelled."""
    runs = []
    for s in seeds:
        runs.append(dict(name=fp_name(s), seed=s, args=MODEL + FP + ["--seed", str(s)], base=None, delta=[]))

    def q(setting, bits, kind="qil", variant="learned", extra=(), base=None, delta=(), commit=None):
        st = SETTINGS[setting]
        for s in seeds:
            name = f"{setting}-w{bits}-{kind}-{variant}-s{s}"
            args = (MODEL + ["--init", fp_ckpt(s), "--lr", Q_LR, "--seed", str(s), "--stages", str(bits),
                             "--epochs", str(st["epochs"][bits])] + st["flags"] + START[kind] + list(extra))
            b = f"{setting}-w{bits}-{kind}-{base}-s{s}" if base else None
            runs.append(dict(name=name, seed=s, args=args, base=b, delta=list(delta), commit=commit))

    # 1. Does learning the intervals earn anything? W2A2 where 2 bits bite, learned against frozen.
    q("edge", 2)
    q("edge", 2, variant="frozen", extra=ABLATIONS["frozen"], base="learned", delta=ABLATIONS["frozen"])
    # 2. QIL's peers at W2A2 where 2 bits bite, and LSQ on QIL's ternary weight grid (the same level count).
    # LSQ on QIL's level count comes right after LSQ: without it LSQ against QIL is not like for like.
    q("edge", 2, "lsq")
    q("edge", 2, "lsq", variant="sym", extra=LSQ_SYM, base="learned", delta=LSQ_SYM)
    q("edge", 2, "pact")
    # PACT from the least-squares clip point: at the 99.9th percentile α did not move and PACT ended ~11 points
    # below QIL, so this is PACT's best start. --pact-calib is younger than --commit: it names its commit.
    q("edge", 2, "pact", variant="mse", extra=PACT_MSE, base="learned", delta=PACT_MSE, commit="a8b5f00a0d312ce8170ad8e16d7b1f1419f4bc82")
    # The integer forward in training against the float one: the same run, only the forward's rounding differs.
    q("edge", 2, variant="int8fwd", extra=INT8_FWD, base="learned", delta=INT8_FWD,
      commit="f61a0e88124a1f6cf4891dc5694409dccabb566e")
    # 3. QIL's mechanisms, each alone, where 2 bits bite. First the two that let the intervals move further
    # than the default does (is "learned = frozen" only a too-small interval step?), then DoReFa, then the rest.
    for v in ("relative", "paper"):
        q("edge", 2, variant=v, extra=ABLATIONS[v], base="learned", delta=ABLATIONS[v])
    q("edge", 2, "dorefa")
    for v in ("wfrozen", "gamma1", "noprune", "actfrozen"):
        q("edge", 2, variant=v, extra=ABLATIONS[v], base="learned", delta=ABLATIONS[v])
    # 3b. Learned against frozen, and equal levels, with the edges at full precision.
    q("std", 2)
    q("std", 2, variant="frozen", extra=ABLATIONS["frozen"], base="learned", delta=ABLATIONS["frozen"])
    q("std", 2, "lsq", variant="sym", extra=LSQ_SYM, base="learned", delta=LSQ_SYM)
    # 4. Distillation from the FP network, every quantizer, W2A2, both settings; between them, learned against
    # frozen at W3A3 where the edges are quantized: from 3 bits on the weights have more than one threshold, so
    # the interval's shape (c, d, γ) reaches the forward, which at 2 bits it does only through one threshold.
    for setting in ("edge", "std"):
        for kind in START:
            if setting == "std" and kind != "qil":  # the run its distillation is compared with, first
                q("std", 2, kind)
            q(setting, 2, kind, variant="distill", extra=DISTILL, base="learned", delta=DISTILL)
        if setting == "edge":
            q("edge", 3)
            q("edge", 3, variant="frozen", extra=ABLATIONS["frozen"], base="learned", delta=ABLATIONS["frozen"])
    # 5. Peers at W4A4 and W3A3 in the standard setting (W2A2's ran with distillation), then W3A3 where it bites.
    for bits in (4, 3):
        for kind in START:
            q("std", bits, kind)
    for kind in START:
        if kind != "qil":
            q("edge", 3, kind)
    # 6. Progressive 5 -> 4 -> 3 -> 2 against direct, standard setting.
    for s in seeds:
        runs.append(dict(name=f"std-prog-qil-learned-s{s}", seed=s, base=None, delta=[],
                         args=MODEL + ["--init", fp_ckpt(s), "--lr", Q_LR, "--seed", str(s), "--stages", "5,4,3,2",
                                       "--stage-epochs", "2"] + SETTINGS["std"]["flags"] + START["qil"]))
    return runs


# ---- provenance ------------------------------------------------------------------------------------------

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cpu():
    model, flags = "unknown", []
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            if k.strip() == "model name" and model == "unknown":
                model = v.strip()
            if k.strip() == "flags" and not flags:
                flags = [f for f in v.split() if f.startswith(("avx", "fma", "amx", "sse4_2"))]
    except OSError:
        pass
    return {"model": model, "flags": sorted(flags), "cores": os.cpu_count()}


def git(*args):
    return subprocess.run(["git", "-C", ROOT] + list(args), check=True, capture_output=True, text=True).stdout.strip()


def build(rev):
    """The qil binary of commit `rev`, built once from a clean export of that commit."""
    sha = git("rev-parse", "--verify", rev + "^{commit}")
    d = os.path.join(R, "bin", sha[:12])
    exe = os.path.join(d, "build", "qil")
    if os.path.exists(exe):
        return sha, exe
    src = d  # the sources with build/ inside, as in a checkout (compiler caches then see the same paths)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(src)
    archive = subprocess.run(["git", "-C", ROOT, "archive", sha], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    launcher = ["-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"] if shutil.which("ccache") else []
    print(f"results: building qil at {sha[:12]} in {d}", file=sys.stderr, flush=True)
    subprocess.run(["cmake", "-S", src, "-B", os.path.join(d, "build"), "-DCMAKE_BUILD_TYPE=Release",
                    "-DQIL_BUILD_TESTS=OFF"] + launcher, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", os.path.join(d, "build"), "--target", "qil", "-j", str(os.cpu_count())],
                   check=True, stdout=subprocess.DEVNULL)
    return sha, exe


def provenance(run, commit, exe, threads):
    init = None
    if "--init" in run["args"]:
        p = run["args"][run["args"].index("--init") + 1]
        init = {"path": os.path.relpath(p, R), "sha256": sha256(p), "run": os.path.basename(os.path.dirname(p))}
    return {"name": run["name"], "seed": run["seed"], "commit": commit, "qil_sha256": sha256(exe),
            "args": run["args"], "init": init, "cpu": cpu(), "threads": threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "host": socket.gethostname(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ---- running ---------------------------------------------------------------------------------------------

STOP = {"requested": False}


def on_sigterm(signum, frame):  # the process group's SIGTERM also reaches `qil train`, which saves and exits
    STOP["requested"] = True


def status(run):
    d = os.path.join(R, run["name"])
    if os.path.exists(os.path.join(d, "done")):
        return "done"
    return "partial" if os.path.exists(os.path.join(d, "last.ckpt")) else "todo"


def run_timed(cmd, d, poll=30):
    """Runs `qil train`, adding its wall time to d/wall_s every 30 s and at the end (a driver killed outright
    loses at most 30 s of a resumed run's total)."""
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


def record(run):
    """Copies a finished run's small outputs into docs/results/runs/<name>/ (committed)."""
    d, out = os.path.join(R, run["name"]), os.path.join(RECORDS, run["name"])
    os.makedirs(out, exist_ok=True)
    for f in ("config.toml", "metrics.csv", "intervals.jsonl", "provenance.json"):
        if os.path.exists(os.path.join(d, f)):
            shutil.copyfile(os.path.join(d, f), os.path.join(out, f + ".tmp"))
            os.replace(os.path.join(out, f + ".tmp"), os.path.join(out, f))


def execute(run, binary, threads):
    """Runs (or continues) one run; False if it had finished already."""
    d = os.path.join(R, run["name"])
    st = status(run)
    if st == "done":
        return False
    if STOP["requested"]:
        raise SystemExit("results: stopped")
    tflag = ["--threads", str(threads)]
    if st == "partial":  # a run continues on the binary it started with
        prov = json.load(open(os.path.join(d, "provenance.json")))
        commit, exe = build(prov["commit"])
        cmd = [exe, "train", "--resume", d, "--progress", "lines"] + tflag
    else:
        for p in run["args"]:
            if p.endswith(".ckpt") and not os.path.exists(p):
                raise SystemExit(f"results: {run['name']} starts from {p}, which does not exist (run its FP network first)")
        # A run that needs a flag younger than --commit names the commit it runs on (its provenance says so).
        commit, exe = build(run["commit"]) if run.get("commit") else binary()
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        prov = provenance(run, commit, exe, threads)
        with open(os.path.join(d, "provenance.json"), "w") as f:
            json.dump(prov, f, indent=1)
        cmd = [exe, "train", "--out", d, "--progress", "lines"] + tflag + run["args"]
    print(f"== {run['name']}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    code = run_timed(cmd, d)
    if STOP["requested"]:
        raise SystemExit(f"results: stopped during {run['name']} (its last checkpoint continues it next time)")
    if code != 0:
        raise SystemExit(f"results: {run['name']} failed (exit {code}); see {d}.log")
    prov = json.load(open(os.path.join(d, "provenance.json")))
    prov["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    prov["wall_s"] = float(open(os.path.join(d, "wall_s")).read())
    with open(os.path.join(d, "provenance.json"), "w") as f:
        json.dump(prov, f, indent=1)
    open(os.path.join(d, "done"), "w").close()
    record(run)
    # docs/results.md from the records so far (a failure here loses no run), by the working tree's own build when
    # there is one: its `qil compare` is the one `results_doc.py --check` holds the committed docs to (an older
    # run's binary labels groups as its own compare did). Else this run's qil.
    tree_qil = os.path.join(ROOT, "build", "qil")
    doc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "results_doc.py")],
                         env=dict(os.environ, QIL=tree_qil if os.access(tree_qil, os.X_OK) else exe),
                         capture_output=True, text=True)
    if doc.returncode != 0:
        print(f"results: docs/results.md not rewritten: {doc.stderr.strip()}", file=sys.stderr, flush=True)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true", help="show the runs and their status, run nothing")
    ap.add_argument("--json", action="store_true", help="with --list: the plan as JSON (name, seed, args, base, delta)")
    ap.add_argument("--only", default="*", help="run only the runs whose name matches this glob (comma list)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds (comma list); seed s starts from the FP network fp-s<s>")
    ap.add_argument("--commit", default="HEAD", help="the commit whose qil runs new runs (default HEAD)")
    ap.add_argument("--threads", type=int, default=2, help="--threads of every run (default 2)")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    globs = a.only.split(",")
    runs = [r for r in plan(seeds) if any(fnmatch.fnmatch(r["name"], g) for g in globs)]
    if a.list:
        if a.json:
            json.dump(runs, sys.stdout, indent=1)
            print()
        else:
            for r in runs:
                print(f"{status(r):8} {r['name']}")
        return
    os.makedirs(R, exist_ok=True)
    signal.signal(signal.SIGTERM, on_sigterm)
    target = {}  # the commit's binary, built when the first new run needs it (a resumed run uses its own)

    def binary():
        if not target:
            target["commit"], target["exe"] = build(a.commit)
        return target["commit"], target["exe"]

    for r in runs:
        if execute(r, binary, a.threads):
            # The plan is read again after every run: an edit to this file (a run added, the order changed)
            # takes effect at the next run without stopping the one in progress.
            os.execv(sys.executable, [sys.executable] + sys.argv)
    print("results: every run of the selection has finished", file=sys.stderr)


if __name__ == "__main__":
    main()
