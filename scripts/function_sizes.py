#!/usr/bin/env python3
"""Lists C++ functions longer than a limit (default 80 lines) in the given files or folders.

A function is counted from the line of its opening brace at namespace depth (a '{' that follows a ')' or a
trailing qualifier, outside any class body) to the matching '}'. Comments and string literals are skipped.
Not a parser: good enough for this code base's formatting (clang-format, one function per definition).
Usage: scripts/function_sizes.py [--max N] PATH...
"""
import pathlib
import re
import sys


def strip(src):
    """Blanks comments and string/char literals, keeping line breaks."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif src.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', src[i:])
            end = src.find(")" + m.group(1) + '"', i) + len(m.group(1)) + 2
            out.append('""' + "\n" * src.count("\n", i, end))
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def functions(path):
    text = strip(pathlib.Path(path).read_text())
    stack = []  # (kind, start_line, name)
    line = 1
    prev = ""
    for i, c in enumerate(text):
        if c == "\n":
            line += 1
        elif c == "{":
            head = text[max(0, i - 300):i]
            head_s = head.rstrip()
            in_func = any(k == "f" for k, _, _ in stack)
            is_func = (not in_func and re.search(r"\)\s*(const|override|noexcept|final|mutable|\s)*(->\s*[\w:<>,\s*&]+)?$", head_s)
                       and not re.search(r"\b(if|for|while|switch|catch)\s*\([^;{}]*\)\s*$", head_s))
            name = ""
            if is_func:
                m = re.search(r"([\w:~<>]+)\s*\([^;{}]*\)[^;{}()]*$", head_s)
                name = m.group(1) if m else "?"
            stack.append(("f" if is_func else "o", line, name))
        elif c == "}":
            if stack:
                kind, start, name = stack.pop()
                if kind == "f":
                    yield name, start, line, line - start + 1


def main(argv):
    limit = 80
    if argv[:1] == ["--max"]:
        limit, argv = int(argv[1]), argv[2:]
    files = []
    for a in argv:
        p = pathlib.Path(a)
        files += sorted(p.rglob("*.cpp")) + sorted(p.rglob("*.h")) if p.is_dir() else [p]
    bad = 0
    for f in files:
        for name, start, end, n in functions(f):
            if n > limit:
                print(f"{f}:{start}: {name} is {n} lines (limit {limit})")
                bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
