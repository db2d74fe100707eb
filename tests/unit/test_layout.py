"""The package's layout: imports only go down, and the queue never reads history.

Every import counts, at module level or inside a function: an import
hidden in a function still ties two modules into one.
"""
import ast
from pathlib import Path

import hueyscope

PACKAGE = Path(hueyscope.__file__).parent


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name, path, modules):
    """The package's modules that module ``name`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
            names = []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            bases = [base]
            names = [alias.name for alias in node.names]
        else:
            continue
        for base in bases:
            # "from pkg import module" imports the module.
            subs = [m for m in ("%s.%s" % (base, n) for n in names) if m in modules]
            if subs:
                targets.update(subs)
            elif base in modules:
                targets.add(base)
    targets.discard(name)
    return targets


def graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def cycles(edges):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_anywhere():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_queue_never_imports_the_recorder_or_the_command_line():
    above = ("hueyscope.events", "hueyscope.commands", "hueyscope.consumer",
             "hueyscope.options", "hueyscope.apps", "hueyscope.cli")
    wrong = {(name, target) for name, targets in graph().items()
             if name.startswith("hueyscope.queue") for target in targets
             if target.startswith(above)}
    assert wrong == set()


# A module that grows past this has more than one job: split it first.
MODULE_LINES = 550


def test_no_module_grows_past_a_few_hundred_lines():
    long = {name: len(path.read_text().splitlines())
            for name, path in _modules().items()}
    assert {n: lines for n, lines in long.items() if lines > MODULE_LINES} == {}
