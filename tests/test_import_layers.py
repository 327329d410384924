"""recurl's imports run one way: kernels <- memory <- agents <- train/CLI, and envs <- train. Read from the source
with ``ast`` (nothing is imported), so a cycle or a layer reaching upwards fails here before it bites at import
time in some other order.

One edge beyond DESIGN.md's diagram: the agents' acting loop (``agents/actor.py``) reads episode ends and final
observations with ``recurl.envs``' readers, which belong beside the wrappers that write them. ``envs`` imports no
other layer, so that edge cannot close a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source folders and the packages they install as (pyproject's package-dir).
PACKAGE_DIRS = {"recurl": "recurl", "agents": "recurl.agents", "envs": "recurl.envs", "kernels": "recurl.kernels"}
#: What each layer may import from recurl besides itself; the rest of recurl (train, CLI, bench) may import anything.
LAYERS = {
    "recurl.kernels": set(),
    "recurl.memory": {"recurl.kernels"},
    "recurl.agents": {"recurl.kernels", "recurl.memory", "recurl.envs"},
    "recurl.envs": set(),
}


def module_files() -> dict[str, Path]:
    modules = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if folder == "recurl" and name.split(".")[1:2] in (["agents"], ["envs"], ["kernels"]):
                continue
            modules[name] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str], submodules: bool = True) -> set[str]:
    """The recurl modules ``name`` imports anywhere in its file (function-level imports included). ``from p import
    x`` counts ``p.x`` too when that is a module, unless ``submodules`` is false (then only the module a statement
    names counts: ``from recurl.kernels import linear_scan`` names the public package, whatever ``linear_scan`` is)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(filter(None, [*anchor, base]))
            targets = [base] + ([f"{base}.{alias.name}" for alias in node.names] if submodules else [])
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from recurl.memory import MEMORIES` is recurl.memory
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def layer(module: str) -> str | None:
    return next((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), None)


def test_every_source_folder_is_read(graph):
    for package in ("recurl.kernels.linear_scan", "recurl.memory", "recurl.agents.ppo", "recurl.envs", "recurl.train"):
        assert package in graph


def test_no_layer_imports_from_a_layer_above_it(graph):
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if (own := layer(module))
        for target in targets
        if layer(target) != own and not any(target.startswith(allowed) for allowed in LAYERS[own])
    ]
    assert not wrong, "\n".join(wrong)


def test_the_import_graph_has_no_cycle(graph):
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_kernels_are_reached_through_their_public_package():
    files = module_files()
    private = [
        f"{module} imports {target}"
        for module, path in files.items()
        if not module.startswith("recurl.kernels")
        for target in imported_modules(module, path, set(files), submodules=False)
        if target.startswith("recurl.kernels.")
    ]
    assert not private, "\n".join(private)
