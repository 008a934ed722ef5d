"""The import rule of docs/architecture.md, enforced on the source: every import (at the top of a module or inside
a function) points down the layers or within one, no import cycle exists, and a task imports another task only
where its registry entry declares that it wraps it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "trainforge"

# Lowest first. A module may import from its own layer and the layers below it.
LAYERS = (
    ("base", ("trainforge", "errors", "hardware")),
    ("config", ("config",)),
    ("tracking", ("tracking",)),
    (
        "building blocks",
        ("data", "models", "methods", "evaluation", "classical", "nn", "checkpoints", "distributed", "inference"),
    ),
    ("run", ("run",)),
    ("tasks", ("tasks",)),
    ("applications", ("pipeline", "stages", "tuning", "active", "constitutional", "export", "serve", "ui")),
    ("cli", ("cli", "__main__")),
)
# config/ is pure data, but it validates names against these catalogs (method names and the tasks each supports,
# estimator and metric names, the bundled data tasks and their layouts, the bundled rewards), which live with what
# they name.
CONFIG_CATALOGS = (
    "trainforge.methods",
    "trainforge.methods.base",
    "trainforge.classical.estimators",
    "trainforge.classical.metrics",
    "trainforge.data.tasks",
    "trainforge.evaluation.rewards",
)


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def imports_of(module: str) -> set[str]:
    """The trainforge modules `module` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `from a.b import c`: c is a module, or a name in a.b
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "trainforge"
    for number, (_, packages) in enumerate(LAYERS):
        if top in packages:
            return number
    raise AssertionError(f"{module} belongs to no layer; add its package to LAYERS (and docs/architecture.md)")


def task_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "tasks" and parts[2] != "registry" else None


def wrapped_packages() -> dict[str, set[str]]:
    """Task package → the task packages it may import: those of the entries its registry entry wraps."""
    from trainforge.tasks import registry

    package = {entry.name: entry.module.split(".")[2] for entry in registry.ENTRIES}
    return {package[e.name]: {package[w] for w in e.wraps} for e in registry.ENTRIES if e.wraps}


def upward_imports() -> list[str]:
    wraps, found = wrapped_packages(), []
    for module, imported in GRAPH.items():
        for target in sorted(imported):
            if layer_of(target) > layer_of(module) and not (
                module.startswith("trainforge.config") and target in CONFIG_CATALOGS
            ):
                found.append(
                    f"{module} → {target} ({LAYERS[layer_of(module)][0]} imports {LAYERS[layer_of(target)][0]})"
                )
            mine, theirs = task_package(module), task_package(target)
            if mine and theirs and mine != theirs and theirs not in wraps.get(mine, set()):
                found.append(f"{module} → {target} (task {mine} imports task {theirs} without wrapping it)")
    return found


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
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

    for node in GRAPH:
        if node not in index:
            visit(node)
    return found


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_point_down_the_layers():
    upward = upward_imports()
    print(f"{len(MODULES)} modules, {sum(map(len, GRAPH.values()))} imports, {len(upward)} pointing up")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    found = cycles()
    print(f"{len(found)} import cycles")
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_checks_can_fail(monkeypatch):
    """A planted upward import, a planted cycle and a task importing a task it does not wrap are reported."""
    monkeypatch.setitem(GRAPH, "trainforge.errors", {"trainforge.cli"})
    assert any(line.startswith("trainforge.errors → trainforge.cli") for line in upward_imports())
    monkeypatch.setitem(GRAPH, "trainforge.errors", {"trainforge.hardware"})
    monkeypatch.setitem(GRAPH, "trainforge.hardware", {"trainforge.errors"})
    assert ["trainforge.errors", "trainforge.hardware"] in cycles()
    monkeypatch.setitem(GRAPH, "trainforge.tasks.gan.task", {"trainforge.tasks.lm.task"})
    assert any("task gan imports task lm" in line for line in upward_imports())
    monkeypatch.setitem(GRAPH, "trainforge.tasks.distill.task", {"trainforge.tasks.lm.task"})
    assert not any("task distill" in line for line in upward_imports())  # declared: distill wraps lm


def test_the_cli_loads_no_torch():
    """`trainforge --help` answers without importing torch (task modules load on first use)."""
    import subprocess
    import sys

    code = "import sys, trainforge.cli, trainforge.tasks.registry; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
