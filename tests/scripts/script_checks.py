"""What the tests of scripts/ share: loading a script as a module, and counting checks.

    script = load("results")       # scripts/results.py as a module
    check(ok, "what failed")       # counts; prints FAILED: ... when ok is false
    finish()                       # prints 'N passed, N failed'; exits non-zero on a failure
"""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_count = {"passed": 0, "failed": 0}


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check(ok, what):
    if ok:
        _count["passed"] += 1
    else:
        _count["failed"] += 1
        print(f"FAILED: {what}")


def finish():
    print(f"{_count['passed']} passed, {_count['failed']} failed")
    sys.exit(1 if _count["failed"] else 0)
