"""The project's modules import one another in one direction: no cycle, and each layer only imports those below.

Layers, lowest first: the core (cats_model's top-level modules, data, model) -> serve, bench -> cloud -> the Modal
launcher plugin. Imports are read from the source with `ast`, those inside functions included: a lazy import is
still a dependency, only a later one.
"""

import ast
from pathlib import Path

from cats_model.paths import PROJECT_ROOT

PACKAGES = ("cats_model", "hydra_plugins")
# Each layer's rank; a module outside these packages of cats_model is core (rank 0).
LAYERS = {
    "cats_model.serve": 1,
    "cats_model.bench": 1,
    "cats_model.cloud": 2,
    "hydra_plugins.modal_launcher": 3,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
    }


def imported(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """{project module: line} of every module `name` imports, wherever in the file (`from a import b` counts as
    `a.b` when that is a module, else as `a`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package upwards
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` imports the modules a, a.b, a.b.c
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    modules = project_modules()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def layer(module: str) -> tuple[str, int]:
    """(the layer's name, its rank) of `module`."""
    for package, rank in LAYERS.items():
        if module == package or module.startswith(package + "."):
            return package, rank
    return "core", 0


def where(graph_paths: dict[str, Path], module: str, target: str, line: int) -> str:
    return f"{graph_paths[module].relative_to(PROJECT_ROOT)}:{line} imports {target}"


def test_no_module_imports_a_layer_above_its_own():
    paths = project_modules()
    upward = [
        f"{where(paths, module, target, line)} ({layer(module)[0]} must not import {layer(target)[0]})"
        for module, targets in import_graph().items()
        for target, line in targets.items()
        if layer(target)[0] != layer(module)[0] and layer(target)[1] >= layer(module)[1]
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    graph, paths = import_graph(), project_modules()
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            if state.get(target) == 1:
                loop = path[path.index(target) :] + [target] if target in path else [module, target]
                cycles.append(
                    " -> ".join(loop) + f"  (closed by {where(paths, module, target, graph[module][target])})"
                )
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_graph_sees_lazy_and_relative_imports():
    """The reader itself: an import inside a function counts, and so does `from . import x`."""
    graph = import_graph()
    assert "cats_model.cloud.settings" in graph["hydra_plugins.modal_launcher._core"]  # inside a function
    assert "hydra_plugins.modal_launcher._core" in graph["hydra_plugins.modal_launcher.launcher"]  # lazy too
