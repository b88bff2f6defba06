"""Mutation score per module from ``mutmut results --all true`` output.

Usage: ``python tools/mutation/score.py results.txt``. Lines look like
``    kdentropy.hard.x_binarize__mutmut_1: killed``; the module is the part
before the mangled function name.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict

LINE = re.compile(r"^\s*(?P<name>[\w.]+)__mutmut_\d+:\s*(?P<status>.+?)\s*$")


def module_of(name: str) -> str:
    """``kdentropy.hard.x_binarize`` -> ``kdentropy.hard`` (methods: ``xǁClassǁmethod``)."""
    parts = name.split(".")
    while parts and (parts[-1].startswith("x_") or parts[-1].startswith("xǁ")):
        parts.pop()
    return ".".join(parts)


def main(path: str) -> int:
    """Print killed / total and the survivors per module; return 0."""
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in open(path, encoding="utf-8"):
        m = LINE.match(line)
        if not m:
            continue
        mod = module_of(m["name"].rsplit(".", 1)[0] + "." + m["name"].rsplit(".", 1)[1])
        by_module[mod][m["status"]] += 1
        if m["status"] in ("survived", "no tests"):
            survivors[mod].append(line.split(":")[0].strip())
    print(f"{'module':45s} {'killed':>7s} {'total':>6s} {'score':>6s}  other")
    for mod in sorted(by_module):
        c = by_module[mod]
        total = sum(c.values())
        killed = c["killed"] + c["timeout"] + c["caught by type check"]
        other = {k: v for k, v in c.items() if k not in ("killed", "timeout")}
        print(f"{mod:45s} {killed:7d} {total:6d} {killed / total:6.1%}  {other}")
    for mod in sorted(survivors):
        print(f"\nsurvivors in {mod}:")
        for s in survivors[mod]:
            print("   ", s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
