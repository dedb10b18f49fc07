"""Checks the shape of the package: import cycles, modality string branches outside the modality modules, and
module sizes. Prints the figures, and exits 1 when a limit is broken (with --strict).

- Cycles: strongly connected components of the graph of `kerastl` modules, counting every import, including
  those inside functions (a cycle hidden in a function-level import is still a cycle).
- Branches: comparisons of a value with the name of a modality ("image", "audio", "text"), e.g.
  `modality == "audio"`, `spec.modality in ("audio", "text")`, and lookup tables keyed by modality names
  (`{"image": ..., "audio": ...}`), outside the modality modules (`MODALITY_MODULES`).
- Layers: every import goes to the importer's own package or to a lower layer of `LAYERS`.
- Sizes: lines per module; the limit is `MAX_LINES`.

    python tools/check_architecture.py [--strict] [--json F]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "kerastl"
MODALITIES = ("image", "audio", "text")
# Where modality differences may live: the Modality implementations.
MODALITY_MODULES = ("kerastl.modalities",)
MAX_LINES = 600
# The layers, lowest first: a module may import from its own package and from packages of lower layers only
# (ARCHITECTURE.md). Top-level modules count as packages of their own name.
LAYERS = [
    {"errors"},
    {"extras", "core", "net", "reporting"},
    {"inputs"},
    {"data"},
    {"backbones"},
    {"train"},
    {"export", "pretraining"},
    {"modalities"},
    {"inspection"},
    {"cli"},
]


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The kerastl modules `name` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: the parents are dependencies too (all but the
        # root package, whose public names load lazily).
        while target and target != PACKAGE:
            if target != name and not name.startswith(target + "."):
                resolved.add(target)
            target = target.rpartition(".")[0]
    return resolved


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for child in graph.get(node, ()):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in graph:
        if node not in index:
            visit(node)
    return sorted(result)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every import whose target's package is not in a lower layer than the importer's (or is in
    no layer at all)."""
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    found = []
    for module, targets in sorted(graph.items()):
        source = _package(module)
        if source == PACKAGE:  # the root __init__: lazy public names
            continue
        for target in sorted(targets):
            package = _package(target)
            if package == source:
                continue
            if source not in rank or package not in rank or rank[package] >= rank[source]:
                found.append(f"{module} -> {target}")
    return found


def _names_a_modality(node) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in MODALITIES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_modality(element) for element in node.elts)
    return False


def modality_branches(path: Path) -> list[int]:
    """Lines that compare something with a modality name."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Compare) and any(_names_a_modality(c) for c in [node.left, *node.comparators]) or isinstance(node, ast.Dict) and any(key is not None and _names_a_modality(key) for key in node.keys):
            lines.append(node.lineno)
    return sorted(lines)


def measure(root: Path = ROOT) -> dict:
    found = modules(root)
    known = set(found)
    graph = {name: imports(name, path, known) for name, path in found.items()}
    branches = {}
    for name, path in found.items():
        if name.startswith(MODALITY_MODULES):
            continue
        lines = modality_branches(path)
        if lines:
            branches[name] = lines
    sizes = {name: len(path.read_text().splitlines()) for name, path in found.items()}
    return {"modules": len(found), "lines": sum(sizes.values()), "cycles": cycles(graph),
            "upward": upward_imports(graph), "branches": branches, "sizes": sizes, "max_lines": MAX_LINES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when a check fails")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    figures = measure()
    over = {name: n for name, n in figures["sizes"].items() if n > MAX_LINES}
    largest = max(figures["sizes"].items(), key=lambda item: item[1])
    print(f"modules {figures['modules']}, lines {figures['lines']:,}, largest {largest[0]} ({largest[1]} lines)")
    print(f"import cycles: {len(figures['cycles'])}")
    for component in figures["cycles"]:
        print(f"  {{{', '.join(component)}}}")
    print(f"imports against the layer order: {len(figures['upward'])}")
    for edge in figures["upward"]:
        print(f"  {edge}")
    total = sum(len(lines) for lines in figures["branches"].values())
    print(f"modality string branches outside {', '.join(MODALITY_MODULES)}: {total}")
    for name, lines in sorted(figures["branches"].items()):
        print(f"  {name}: {len(lines)} (lines {', '.join(map(str, lines))})")
    print(f"modules over {MAX_LINES} lines: {len(over)}")
    for name, n in sorted(over.items(), key=lambda item: -item[1]):
        print(f"  {name}: {n}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    failed = figures["cycles"] or figures["upward"] or figures["branches"] or over
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
