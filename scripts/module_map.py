#!/usr/bin/env python3
"""Prints which modules of each workspace crate use which others, and fails on a cycle.

A module is a top-level file or directory of crates/<crate>/src (lib.rs and main.rs are
the crate root, not modules). A module uses another when its code (comments left out)
names `crate::<other>`, also inside `use crate::{...}` groups.

    python3 scripts/module_map.py           # map + cycle check (exit 1 on a cycle)
    python3 scripts/module_map.py --check   # cycle check only
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMMENT = re.compile(r"//.*")
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def modules_of(src):
    mods = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src)
        name = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        name = name.removesuffix(".rs")
        if name in ("lib", "main", "bin"):
            continue
        mods.setdefault(name, []).append(path)
    return mods


def uses(files, known, own):
    code = "\n".join(COMMENT.sub("", f.read_text(errors="replace")) for f in files)
    found = set(PATH.findall(code))
    for group in GROUP.findall(code):
        found |= {part.strip().split("::")[0] for part in group.split(",")}
    return sorted(m for m in found if m in known and m != own)


def find_cycle(graph):
    """One cycle as a list of modules, or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in graph:
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def main():
    check_only = "--check" in sys.argv[1:]
    cycles = 0
    for src in sorted((ROOT / "crates").glob("*/src")):
        mods = modules_of(src)
        graph = {m: uses(files, mods, m) for m, files in mods.items()}
        crate = src.parent.name
        if not check_only:
            print(f"{crate}")
            for m in sorted(graph):
                print(f"  {m:<14} -> {', '.join(graph[m]) or '-'}")
        cycle = find_cycle(graph)
        if cycle:
            cycles += 1
            print(f"{crate}: import cycle {' -> '.join(cycle)}", file=sys.stderr)
    if cycles:
        sys.exit(1)
    if check_only:
        print("module map: no import cycle in any crate")


if __name__ == "__main__":
    main()
