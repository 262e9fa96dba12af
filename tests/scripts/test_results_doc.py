#!/usr/bin/env python3
"""The sentences scripts/results_doc.py writes follow from the paired intervals they are given: a group is named by
its records and `qil compare`'s label (the settings in which it differs from the baseline); the headline of docs/qil.md calls the
result negative only when no setting shows learned intervals beating frozen ones, and puts each mechanism in the
bucket its verdict says.

Usage: test_results_doc.py. Prints 'N passed, N failed'; exits non-zero on a failure. Standard library only; no
qil binary (the comparisons are given, not run).
"""

from script_checks import check, finish, load

doc = load("results_doc")


def result(mean, lo, hi, n=3):
    verdict = "higher" if lo > 0 else "lower" if hi < 0 else "no difference shown"
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": n, "verdict": verdict}


def group(prefix, settings, paired=None, baseline=False, label=None):
    """A group as `qil compare --json` gives it; label: its settings that differ from the baseline's."""
    g = {"baseline": baseline, "settings": settings, "n": 3, "label": label or "",
         "runs": [{"dir": f"docs/results/runs/{prefix}-s{s}"} for s in (0, 1, 2)]}
    if paired:
        g["paired"] = paired
    return g


# Naming: qil compare's label (only what differs from the baseline), behind the records' name.
base = group("edge-w2-qil-learned", {"fix_gamma": "false", "no_pruning": "false"}, baseline=True)
var = group("edge-w2-qil-gamma1", {"fix_gamma": "true", "no_pruning": "false"}, result(0.14, 0.13, 0.16),
            label="fix_gamma=true")
lines = doc.verdicts({"groups": [base, var]})
check(len(lines) == 1, f"one sentence per compared group: {lines}")
check(lines[0].startswith("- `edge-w2-qil-gamma1` (fix_gamma=true): +0.14 points against `edge-w2-qil-learned`"),
      f"named by records and the one differing setting: {lines[0]}")
check("no_pruning" not in lines[0], f"a setting equal to the baseline's is not named: {lines[0]}")
check(lines[0].endswith("higher than it."), f"interval above zero reads 'higher': {lines[0]}")
few = group("edge-w2-qil-gamma1", {"fix_gamma": "true"}, result(0.1, -1, 1, n=2), label="fix_gamma=true")
check("no verdict before n = 3" in doc.verdicts({"groups": [base, few]})[0], "n = 2 gives no verdict")


def headline_with(frozen, mech):
    """The headline with `paired` answering from the given verdicts: frozen = {"edge-w2": result, ...} (learned
    against frozen), mech = {prefix: result}."""
    def fake(prefixes):
        if prefixes[0] == "edge-w2-qil-learned" and len(prefixes) > 2:
            return mech
        key = prefixes[0].rsplit("-qil-", 1)[0]
        return {f"{key}-qil-frozen": frozen[key]} if key in frozen else {}
    doc.paired = fake
    return "\n".join(doc.headline())


none = result(0.3, -0.3, 0.9)
h = headline_with({"edge-w2": none, "std-w2": result(0.25, -0.01, 0.5), "edge-w3": none}, {})
check("A negative result" in h and "edge W2A2 +0.30 [-0.30, +0.90], n = 3" in h and "std W2A2 +0.25" in h
      and "edge W3A3 +0.30" in h, f"no setting where learned beats frozen is a negative result, every interval: {h}")
h = headline_with({"edge-w2": none, "edge-w3": result(-0.6, -1.0, -0.2)}, {})
check("A negative result" not in h and "beat freezing them at calibration in: edge W3A3 (" in h,
      f"frozen below learned in one setting names that setting alone: {h}")
h = headline_with({}, {"edge-w2-qil-gamma1": result(0.14, 0.13, 0.16), "edge-w2-qil-wfrozen": none,
                       "edge-w2-qil-noprune": result(-0.5, -0.8, -0.2)})
check("shown to earn their keep" in h and "holding the pruning point at 0 (-0.50" in h.split("earn their keep")[1]
      .split("\n")[0], f"a variant lower than the default is a mechanism that earns its keep: {h}")
check("No single mechanism" not in h, f"not 'no single mechanism' when one earns: {h}")
check("No measurable change: freezing the weight intervals" in h, f"the undistinguished variant: {h}")
check("Higher than QIL's default: fixing γ at 1 (+0.14" in h, f"the variant above the default: {h}")
h = headline_with({}, {"edge-w2-qil-gamma1": none})
check("No single mechanism of QIL is shown to earn its keep" in h, f"nothing lower: none earns: {h}")
check(headline_with({}, {}) == "", "nothing compared yet: no headline")

finish()
