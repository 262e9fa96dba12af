#!/usr/bin/env python3
"""The results plan (scripts/results.py) says what it runs: every variant's flags are exactly its base run's plus
the flags its name promises, every QIL run names both calibration rules, each seed starts from its own FP
network, the setting in a run's name is the one its flags set, and every flag is one `qil train` knows.

Usage: test_results_plan.py QIL_BINARY. Prints 'N passed, N failed'; exits non-zero on a failure.
"""
import re
import subprocess
import sys

from script_checks import check, finish, load

results = load("results")


def flags_of(args):
    return [a for a in args if a.startswith("--")]


def value(args, flag):
    return args[args.index(flag) + 1] if flag in args else None


help_text = subprocess.run([sys.argv[1], "train", "--help"], capture_output=True, text=True, check=True).stdout
known = set(re.findall(r"(--[a-z0-9-]+)", help_text))
seeds = [0, 1, 2]
runs = results.plan(seeds)
by_name = {r["name"]: r for r in runs}
check(len(by_name) == len(runs), "run names are unique")
for r in runs:
    n, a = r["name"], r["args"]
    for f in flags_of(a):
        check(f in known, f"{n}: {f} is a flag of qil train")
    for f in set(flags_of(a)):
        check(flags_of(a).count(f) == 1, f"{n}: {f} given once")
    check(value(a, "--seed") == str(r["seed"]), f"{n}: --seed is the run's seed")
    if n.startswith("fp-"):
        check("--init" not in a and "--stages" not in a, f"{n}: an FP network trains from scratch")
        continue
    check(value(a, "--init") == results.fp_ckpt(r["seed"]), f"{n}: starts from the FP network of its own seed")
    setting = n.split("-")[0]
    check(value(a, "--first-last") == {"std": "fp", "edge": "same"}[setting], f"{n}: --first-last matches '{setting}'")
    m = re.search(r"-w(\d)-", n)
    if m:
        check(value(a, "--stages") == m.group(1), f"{n}: --stages matches its name")
    kind = value(a, "--quantizer")
    check(kind is not None and f"-{kind}-" in n, f"{n}: names its quantizer ({kind})")
    if kind == "qil":  # the old plan's bug: a flag given for one rule dropped the other one silently
        check(value(a, "--weight-calib") == "mse" and value(a, "--act-calib") == "mse",
              f"{n}: QIL names both calibration rules (mse)")
    if r["base"]:
        base = by_name.get(r["base"])
        check(base is not None, f"{n}: its base {r['base']} is in the plan")
        if base:
            check(a == base["args"] + r["delta"], f"{n}: flags are exactly {r['base']}'s plus {r['delta']}")
            check(r["delta"] != [], f"{n}: a variant differs from its base")
# Every variant name carries its ablation's flags.
for v, fl in results.ABLATIONS.items():
    for r in runs:
        if f"-{v}-s" in r["name"] and v != "learned":
            check(all(f in r["args"] for f in fl if f.startswith("--")), f"{r['name']}: has {v}'s flags {fl}")
check(sum(1 for r in runs if r["name"].startswith("fp-")) == len(seeds), "one FP network per seed")
finish()
