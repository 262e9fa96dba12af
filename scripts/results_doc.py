#!/usr/bin/env python3
"""Writes docs/results.md (and the summary at the top of docs/qil.md) from the run records in docs/results/runs/ (scripts/results.py copies them there)
with `qil compare`: every table is a `qil compare` call whose command is printed above it, and every verdict
sentence is read from that call's JSON (a 95% interval that excludes zero, over n >= 3 seeds paired by seed).

Usage: scripts/results_doc.py [--check]   (--check: exit 1 if docs/results.md is not what it would write)
Environment: QIL (the binary whose `compare` runs; default build/qil). Standard library only.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = os.path.join(ROOT, "docs", "results", "runs")
DOC = os.path.join(ROOT, "docs", "results.md")
SEEDS = (0, 1, 2)
MIN_N = 3


def qil():
    q = os.environ.get("QIL", os.path.join(ROOT, "build", "qil"))
    if not os.path.exists(q):
        raise SystemExit(f"results_doc: no qil binary at {q} (build it, or set QIL)")
    return q


def rel(p):
    return os.path.relpath(p, ROOT)


def runs_of(prefix):
    """The recorded runs prefix-s0, -s1, -s2 that exist."""
    return [d for d in (os.path.join(RECORDS, f"{prefix}-s{s}") for s in SEEDS) if os.path.isdir(d)]


def compare(prefixes, stage=None):
    """`qil compare` over the runs of `prefixes` (the first is the baseline): (command text, markdown, json)."""
    dirs = [d for p in prefixes for d in runs_of(p)]
    if not dirs or not runs_of(prefixes[0]):
        return None
    extra = ["--stage", stage] if stage else []
    base = ["--baseline", rel(runs_of(prefixes[0])[0])]
    cmd = ["compare"] + extra + base + [rel(d) for d in dirs]
    md = subprocess.run([qil()] + cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    js = json.loads(subprocess.run([qil()] + cmd + ["--json"], cwd=ROOT, capture_output=True, text=True,
                                   check=True).stdout)
    short = ["qil", "compare"] + extra + base + [f"docs/results/runs/{p}-s*" for p in prefixes]
    return " ".join(short), md, js


def prefix_of(g):
    """The record name a group's runs share (edge-w2-qil-learned for edge-w2-qil-learned-s0..2)."""
    names = {os.path.basename(r["dir"]).rsplit("-s", 1)[0] for r in g["runs"]}
    return "/".join(sorted(names))


def verdicts(js):
    """One sentence per compared group with n >= MIN_N on both sides; each group is named by its records and the
    settings in which it differs from the baseline."""
    base = next(g for g in js["groups"] if g["baseline"])
    out = []
    for g in js["groups"]:
        p = g.get("paired")
        if not p:
            continue
        name = f"`{prefix_of(g)}` ({g['label']})"  # qil compare's label: what differs from the baseline
        if p["n"] < MIN_N or base["n"] < MIN_N:
            out.append(f"- {name}: n = {p['n']} paired seeds so far; no verdict before n = {MIN_N}.")
            continue
        says = {"higher": "higher than", "lower": "lower than", "no difference shown": "not distinguishable from"}
        out.append(f"- {name}: {p['mean']:+.2f} points against `{prefix_of(base)}` (95% interval "
                   f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}], n = {p['n']}): {says[p['verdict']]} it.")
    return out


def section(title, intro, prefixes, stage=None):
    r = compare(prefixes, stage)
    lines = [f"## {title}", ""] + ([intro, ""] if intro else [])
    if r is None:
        lines += [f"(Not run yet: {', '.join(p + '-s*' for p in prefixes)}.)", ""]
        return lines
    cmd, md, js = r
    missing = [p for p in prefixes if len(runs_of(p)) < MIN_N]
    lines += ["```", cmd, "```", "", md.rstrip(), ""]
    if missing:
        lines += [f"Still running or queued (n < {MIN_N}): {', '.join(p + '-s*' for p in missing)}.", ""]
    lines += verdicts(js) + [""]
    return lines


# The learned parameter of each family, per side (intervals.jsonl's names): QIL's c and d, LSQ's step s, PACT's α.
MOVING = {"qil_weight": ("c", "d"), "qil_activation": ("c", "d"), "qil_activation_signed": ("c", "d"),
          "lsq_weight": ("step",), "lsq_weight_symmetric": ("step",), "lsq_activation": ("step",),
          "lsq_activation_signed": ("step",), "pact_activation": ("alpha",), "pact_activation_signed": ("alpha",)}


def movement(prefix):
    """|relative change| (%) of each learned quantizer parameter from its calibration record (the layer's first
    row of intervals.jsonl) to its last, over every layer and seed of `prefix`: {side: [changes]}."""
    out = {"weight": [], "activation": []}
    for d in runs_of(prefix):
        first, last = {}, {}
        for line in open(os.path.join(d, "intervals.jsonl")):
            r = json.loads(line)
            first.setdefault(r["layer"], r)
            last[r["layer"]] = r
        for layer, r0 in first.items():
            for side in out:
                q0, q1 = r0.get(side) or {}, last[layer].get(side) or {}
                for p in MOVING.get(q0.get("kind"), ()):
                    if q0.get(p):
                        out[side].append(abs(q1[p] / q0[p] - 1.0) * 100.0)
    return out


def movement_table(prefixes):
    rows = ["| runs | weights: median, max | activations: median, max |", "|---|---|---|"]
    for p in prefixes:
        if len(runs_of(p)) < MIN_N:
            continue
        m = movement(p)
        cell = lambda v: f"{statistics.median(v):.2f}%, {max(v):.2f}%" if v else "— (nothing learned)"
        rows.append(f"| {p} | {cell(m['weight'])} | {cell(m['activation'])} |")
    return rows


def fp_table():
    rows = ["| seed | FP network | test top-1 (%) | best.ckpt SHA-256 (first 12) | commit |", "|---|---|---|---|---|"]
    users = {}
    for d in glob.glob(os.path.join(RECORDS, "*", "provenance.json")):
        p = json.load(open(d))
        if p.get("init"):
            users.setdefault(p["init"]["run"], set()).add(p["init"]["sha256"][:12])
    for s in SEEDS:
        d = os.path.join(RECORDS, f"fp-s{s}")
        if not os.path.isdir(d):
            rows.append(f"| {s} | fp-s{s} | (not run yet) | | |")
            continue
        last = open(os.path.join(d, "metrics.csv")).read().strip().splitlines()[-1].split(",")
        head = open(os.path.join(d, "metrics.csv")).readline().strip().split(",")
        prov = json.load(open(os.path.join(d, "provenance.json")))
        sha = ", ".join(sorted(users.get(f"fp-s{s}", []))) or "(no quantized run yet)"
        rows.append(f"| {s} | fp-s{s} | {float(last[head.index('test_top1')]):.2f} | {sha} | {prov['commit'][:12]} |")
    return rows


def machine():
    cpus = set()
    for d in glob.glob(os.path.join(RECORDS, "*", "provenance.json")):
        c = json.load(open(d))["cpu"]
        cpus.add(f"{c['model']} ({c['cores']} cores; {' '.join(f for f in c['flags'] if f in ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16'))})")
    return "; ".join(sorted(cpus)) or "(no run yet)"


def final_top1(run_dir):
    rows = open(os.path.join(run_dir, "metrics.csv")).read().strip().splitlines()
    return float(rows[-1].split(",")[rows[0].split(",").index("test_top1")])


def cost_line():
    parts = []
    for setting in ("std", "edge"):
        diffs = [final_top1(os.path.join(RECORDS, f"fp-s{s}")) - final_top1(d)
                 for s, d in ((s, os.path.join(RECORDS, f"{setting}-w2-qil-learned-s{s}")) for s in SEEDS)
                 if os.path.isdir(d) and os.path.isdir(os.path.join(RECORDS, f"fp-s{s}"))]
        if diffs:
            m = sum(diffs) / len(diffs)
            sd = (sum((x - m) ** 2 for x in diffs) / (len(diffs) - 1)) ** 0.5 if len(diffs) > 1 else None
            parts.append(f"{setting} W2A2 {m:.2f}" + (f" ± {sd:.2f}" if sd is not None else "") + f" points (n = {len(diffs)})")
        else:
            parts.append(f"{setting} W2A2 not run yet")
    return "; ".join(parts) + "."


def document():
    L = ["# Results: QIL on ResNet-20 / Fashion-MNIST", "",
         "Written by `scripts/results_doc.py` from the run records in `docs/results/runs/` (each run's resolved",
         "`config.toml`, `metrics.csv`, `intervals.jsonl` and `provenance.json`: the commit and SHA-256 of the `qil`",
         "that ran it, its command, its starting checkpoint's SHA-256, the CPU and threads). `scripts/results.py`",
         "launches the runs (resumable, one at a time) and builds `qil` from a clean export of the commit it runs.",
         "Every table below is the output of the `qil compare` command printed above it.", "",
         "How to read it: every number is Fashion-MNIST test top-1 (%) after the run's last epoch; mean ± sample",
         "standard deviation over seeds 0, 1, 2. Seed s starts from its own full-precision network `fp-s<s>` (table",
         "below), so a comparison pairs runs by seed: the paired difference and its 95% interval (Student's t,",
         "n − 1 degrees of freedom). A verdict is written only where n ≥ 3 and the interval excludes zero.", "",
         f"Machine: {machine()}; 2 threads per run. Wall times are in each run's provenance.json; the machine was",
         "shared with builds while they ran, so they are not speed figures.", "",
         "Schedule: FP 8 epochs from scratch at LR 0.1; quantized runs fine-tune directly from `fp-s<s>` at LR 0.01,",
         "cosine, SGD momentum 0.9, batch 128, crop + flip. Each quantizer from its own documented start: QIL's",
         "intervals from least-squares clip points (`--weight-calib mse --act-calib mse`, docs/qil.md), LSQ's step",
         "sizes from its own rule, PACT's α from the 99.9th percentile (and, in the `pact-mse` rows, from the",
         "least-squares clip point, `--pact-calib mse`, run by the later commit that added the flag, named in each",
         "run's provenance.json), DoReFa",
         "with nothing to learn.", "",
         "Two settings:",
         "- **std**: the first conv and the last linear stay full precision (the paper's rule), 2 epochs.",
         "- **edge**: they are quantized at the stage's width too (`--first-last same`: the image itself goes",
         "  through a signed 2-bit quantizer at W2A2, and the classifier has 2-bit weights), 3 epochs at W3A3 and",
         "  4 at W2A2. With the edges at full precision 2 bits cost little on this task, leaving little room for",
         "  methods to differ; quantizing the edges too is meant to make 2 bits cost several points.", "",
         "What 2 bits cost (QIL, learned intervals, against each seed's FP network): " + cost_line(), "",
         "Levels at 2 bits: QIL's weights are ternary (−1, 0, 1: 3 levels), LSQ's weights have 4 (−2, −1, 0, 1 steps),",
         "PACT's and DoReFa's weights 4 (±⅓, ±1, no zero); every method's activations have 4.", "",
         "## Full-precision networks", ""] + fp_table() + [""]
    L += section("Does learning the intervals help? QIL learned against frozen at W2A2",
                 "`frozen`: every c, d, γ stays where calibration put it (`--freeze-intervals`); the weights and output "
                 "scales train in both.",
                 ["edge-w2-qil-learned", "edge-w2-qil-frozen"])
    L += section("Learned with relative interval steps against frozen (edge, W2A2)",
                 "The same question for QIL's intervals learned with `--quant-grad-scale relative` (c and d step "
                 "relative to the interval's width; the default's 1/sqrt(N·q) leaves the activation intervals within a "
                 "few percent of calibration). Baseline: the frozen intervals.",
                 ["edge-w2-qil-frozen", "edge-w2-qil-learned", "edge-w2-qil-relative"])
    L += section("The same question where the edges stay full precision (std)", "",
                 ["std-w2-qil-learned", "std-w2-qil-frozen"])
    L += ["## How far the learned parameters moved (edge, W2A2)", "",
          "Each learned quantizer parameter's change from calibration to the run's end, |last / calibrated − 1|, "
          "median and largest over every layer and seed (from each run's intervals.jsonl; QIL: c and d, LSQ: the "
          "step, PACT: α). Under QIL's default step rule the activation intervals barely move (median a few hundredths "
          "of a percent), and PACT's α, whose gradient is scaled the same way (1/sqrt(N·q)), stays within a tenth "
          "of a percent of its start at the 99.9th percentile of the calibration inputs. At 2 bits that start "
          "puts the first level at a third of that percentile, and every input below a sixth of it rounds to 0. DoReFa, whose "
          "weights are PACT's and whose activations clip at a fixed 1, lands far above PACT in the next table: "
          "PACT's deficit here comes from its activations' start and step rule, not from its weights. Started "
          "instead from the least-squares clip point QIL's activation intervals start from (`--pact-calib mse`, the "
          "`pact-mse` rows), PACT lands with QIL in the next table: the deficit was the start.", ""]
    L += movement_table(["edge-w2-qil-learned", "edge-w2-qil-relative", "edge-w2-qil-paper", "edge-w2-lsq-learned",
                         "edge-w2-lsq-sym", "edge-w2-pact-learned", "edge-w2-pact-mse"]) + [""]
    L += section("QIL and its peers at W2A2 (edge)",
                 "`--quantizer lsq|pact|dorefa`, each from its own start, same schedule and seeds as QIL's row.",
                 ["edge-w2-qil-learned", "edge-w2-lsq-learned", "edge-w2-pact-learned", "edge-w2-pact-mse",
                  "edge-w2-dorefa-learned"])
    for setting in ("edge", "std"):
        L += section(f"Equal levels at 2 bits: LSQ on QIL's ternary weight grid ({setting})",
                     "`--lsq-symmetric`: LSQ's weights on Q_N = Q_P = 1 (levels −s, 0, s), the 3 levels of QIL's 2-bit "
                     "weights, against QIL and against LSQ's own 4-level grid.",
                     [f"{setting}-w2-qil-learned", f"{setting}-w2-lsq-sym", f"{setting}-w2-lsq-learned"])
    L += section("QIL's mechanisms, one at a time (edge, W2A2)",
                 "Each row changes one thing in QIL's run: `freeze_intervals` (all c, d, γ at calibration), `fix_gamma` "
                 "(γ = 1), `freeze_act_intervals` (activation intervals at calibration), `freeze_weight_intervals` "
                 "(weight intervals at calibration), `no_pruning` (c tied to d: the pruning point stays at 0) and "
                 "`quant_recipe=paper` (raw interval gradients, output scales fixed at their least-squares fit, "
                 "interval LR 1/100 of the weights') and `quant_grad_scale=relative` (c and d step relative to the "
                 "interval's width, where the default scales each layer's interval gradients by 1/sqrt(N·q): "
                 "under the default the activation intervals end within a few percent of calibration, so this row "
                 "asks whether intervals that move further earn more).",
                 ["edge-w2-qil-learned", "edge-w2-qil-frozen", "edge-w2-qil-gamma1", "edge-w2-qil-actfrozen",
                  "edge-w2-qil-wfrozen", "edge-w2-qil-noprune", "edge-w2-qil-paper", "edge-w2-qil-relative"])
    for setting in ("edge", "std"):
        for kind in ("qil", "lsq", "pact", "dorefa"):
            L += section(f"Distillation from the FP network: {kind}, W2A2 ({setting})",
                         "`--distill 4 --distill-weight 0.5`: half the loss is the cross-entropy to the FP network's "
                         "softmax at temperature 4 (times T²).",
                         [f"{setting}-w2-{kind}-learned", f"{setting}-w2-{kind}-distill"])
    L += section("Integer forward against the float forward (edge, W2A2)",
                 "`--int8-forward`: the quantized layers' training forward in integers (exact int32 sums of the "
                 "levels, docs/int8.md), the backward as before; evaluation is the float path in both. The same "
                 "run otherwise, so any difference is the rounding of the float forward's f32 sums carried through "
                 "training. Its rows run on the commit that adds the flag.",
                 ["edge-w2-qil-learned", "edge-w2-qil-int8fwd"])
    for bits in (4, 3):
        L += section(f"QIL and its peers at W{bits}A{bits} (std)", "",
                     [f"std-w{bits}-{k}-learned" for k in ("qil", "lsq", "pact", "dorefa")])
    L += section("QIL and its peers at W3A3 (edge)", "",
                 [f"edge-w3-{k}-learned" for k in ("qil", "lsq", "pact", "dorefa")])
    L += section("Learned against frozen at W3A3 (edge)", "", ["edge-w3-qil-learned", "edge-w3-qil-frozen"])
    L += section("Progressive 5 → 4 → 3 → 2 against direct W2A2 (std)",
                 "The progressive run's W2A2 stage (2 epochs per stage) against 2 epochs of direct fine-tuning.",
                 ["std-w2-qil-learned", "std-prog-qil-learned"], stage="w2a2")
    L += ["## Earlier results", "",
          "The tables that stood here before this plan mixed two full-precision networks across seeds, mislabelled",
          "two calibration columns and compared LSQ with QIL's old starting rule; they were removed (they remain in",
          "the repository's history). Every figure above comes from the records in `docs/results/runs/`.", ""]
    return "\n".join(L)


QIL_DOC = os.path.join(ROOT, "docs", "qil.md")
BEGIN, END = "<!-- results: written by scripts/results_doc.py -->", "<!-- end of results -->"


# Each single-mechanism variant of QIL's edge W2A2 run, as what it does instead (for the headline of docs/qil.md).
MECHANISM = {"edge-w2-qil-gamma1": "fixing γ at 1",
             "edge-w2-qil-actfrozen": "freezing the activation intervals at calibration",
             "edge-w2-qil-wfrozen": "freezing the weight intervals at calibration",
             "edge-w2-qil-noprune": "holding the pruning point at 0",
             "edge-w2-qil-paper": "the paper's recipe (raw interval gradients, output scales fixed)",
             "edge-w2-qil-relative": "interval steps relative to the interval's width"}


def paired(prefixes):
    """{variant prefix: paired result} of `qil compare` over `prefixes` (the first is the baseline), n >= MIN_N only."""
    r = compare(prefixes)
    if r is None:
        return {}
    return {prefix_of(g): g["paired"] for g in r[2]["groups"]
            if g.get("paired") and g["paired"]["n"] >= MIN_N}


def headline():
    """The answer to the question QIL exists for, computed from the paired intervals: has learning the intervals,
    or any one of QIL's mechanisms, been shown to earn accuracy here?"""
    iv = lambda p: f"{p['mean']:+.2f} [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}], n = {p['n']}"
    frozen = []
    for setting, bits in (("edge", 2), ("std", 2), ("edge", 3)):
        p = paired([f"{setting}-w{bits}-qil-learned", f"{setting}-w{bits}-qil-frozen"]).get(
            f"{setting}-w{bits}-qil-frozen")
        if p:
            frozen.append((f"{setting} W{bits}A{bits}", p))
    mech = paired(["edge-w2-qil-learned"] + list(MECHANISM))
    if not frozen and not mech:
        return []
    out = []
    if frozen:
        wins = [s for s, p in frozen if p["verdict"] == "lower"]
        lead = ("- Learning QIL's intervals is shown to beat freezing them at calibration in: " + ", ".join(wins)
                if wins else
                "- **A negative result.** In no setting tested has learning QIL's intervals been shown to beat "
                "freezing them at their least-squares calibration")
        out.append(lead + " (frozen − learned, 95% interval: " +
                   "; ".join(f"{s} {iv(p)}" for s, p in frozen) + ").")
    if mech:
        by = {v: [k for k, p in mech.items() if p["verdict"] == v] for v in ("lower", "no difference shown", "higher")}
        each = lambda ks: ", ".join(f"{MECHANISM[k]} ({iv(mech[k])})" for k in ks)
        if by["lower"]:
            out.append("- Mechanisms shown to earn their keep (edge W2A2, variant − QIL's default): " +
                       each(by["lower"]) + " cost accuracy.")
        else:
            out.append("- No single mechanism of QIL is shown to earn its keep (edge W2A2, variant − QIL's default).")
        if by["no difference shown"]:
            out.append("  - No measurable change: " + each(by["no difference shown"]) + ".")
        if by["higher"]:
            out.append("  - Higher than QIL's default: " + each(by["higher"]) + ".")
    return out + [""]


def summary():
    """What the evidence says about QIL's own mechanisms, for the top of docs/qil.md."""
    L = [BEGIN, "## What the evidence says", "",
         "From `docs/results.md` (ResNet-20 / Fashion-MNIST, three seeds, each from its own full-precision network,",
         "paired 95% intervals; a mechanism \"earns\" something only where the interval excludes zero). "
         "What 2 bits cost: " + cost_line(), ""] + headline()
    questions = [
        ("Learning the intervals at all (learned − frozen), edge W2A2", ["edge-w2-qil-learned", "edge-w2-qil-frozen"]),
        ("Learning them with relative steps, against frozen, edge W2A2",
         ["edge-w2-qil-frozen", "edge-w2-qil-relative"]),
        ("Learning the intervals at all, std W2A2", ["std-w2-qil-learned", "std-w2-qil-frozen"]),
        ("Each mechanism alone (edge W2A2; the variant against QIL's default)",
         ["edge-w2-qil-learned"] + list(MECHANISM)),
        ("QIL against its peers (edge W2A2)", ["edge-w2-qil-learned", "edge-w2-lsq-learned", "edge-w2-pact-learned",
                                                "edge-w2-dorefa-learned", "edge-w2-lsq-sym", "edge-w2-pact-mse"]),
    ]
    for title, prefixes in questions:
        r = compare(prefixes)
        L.append(f"**{title}.**")
        L += verdicts(r[2]) if r else []
        missing = [p + "-s*" for p in prefixes if not runs_of(p)]
        if missing:
            L.append(f"- not run yet: {', '.join(missing)}.")
        L.append("")
    L += ["Reading the mechanism rows: a variant *lower* than QIL's default is a mechanism that earns its keep; "
          "*not distinguishable* is a negative result for that mechanism in this setting; *higher* means QIL's "
          "default does worse than the variant.", END]
    return "\n".join(L)


def with_summary(text):
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        return head + summary() + rest.split(END, 1)[1]
    first_section = text.index("\n## ") + 1
    return text[:first_section] + "\n" + summary() + "\n" + text[first_section:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/results.md differs from what would be written")
    a = ap.parse_args()
    outputs = {DOC: document(), QIL_DOC: with_summary(open(QIL_DOC).read())}
    if a.check:
        stale = [rel(p) for p, t in outputs.items() if not os.path.exists(p) or open(p).read() != t]
        print("up to date" if not stale else f"differ from their records: {', '.join(stale)}")
        sys.exit(1 if stale else 0)
    for p, t in outputs.items():
        with open(p + ".tmp", "w") as f:
            f.write(t)
        os.replace(p + ".tmp", p)


if __name__ == "__main__":
    main()
