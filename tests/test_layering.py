"""The tree is the architecture: the import graph of `hpsearch/`, computed from the source.

Every import counts, wherever it is written (module top, inside a function, under
`TYPE_CHECKING`): a lazy import that closes a cycle still makes one. The rules and why are in
docs/architecture.md.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hpsearch"

# Third-party packages a layer must not reach, directly or through the hpsearch modules it uses.
FORBIDDEN = {
    "hpsearch.spec": {"torch", "torchvision", "optuna", "sqlalchemy"},
    "hpsearch.train": {"optuna", "sqlalchemy"},
    "hpsearch.batch_size": {"optuna", "sqlalchemy"},
    "hpsearch.guide": {"optuna", "sqlalchemy"},
    # The default search is plain Optuna + numpy: GPSampler imports torch itself, lazily.
    "hpsearch.search": {"torch", "torchvision", "sqlalchemy", "yaml", "pydantic"},
    "hpsearch.errors": {"torch", "optuna", "sqlalchemy"},
    "hpsearch.signals": {"torch", "optuna", "sqlalchemy"},
}
# The one module that may use Optuna's private API (see its docstring).
OPTUNA_COMPAT = "hpsearch.storage.optuna_compat"
# torch's dispatch-mode hooks count the probe's tensor bytes; no public API does that.
PRIVATE_ALLOWED = {"hpsearch.batch_size.probe": {"torch"}}
MAX_TOP_LEVEL_MODULES = 8
MAX_LINES = 450
# The layer order of docs/architecture.md, top first: a module imports only from its own layer
# or one below. `hpsearch` is the package's __init__; top-level modules are layers of their own.
LAYERS: list[set[str]] = [
    {"cli", "__main__", "hpsearch"},
    {"commands", "api", "integrations"},
    {"inspect", "guide"},
    {"worker"},
    {"objective"},
    {"study"},
    {"tracking"},
    {"storage", "search"},
    {"budget"},
    {"spec", "batch_size"},
    {"train"},
    {"errors", "signals", "version"},
]


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)  # hpsearch modules imported
    external: set[str] = field(default_factory=set)  # third-party top-level names imported


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        modules[_name(path)] = Module(_name(path), path, ast.parse(path.read_text()))
    for module in modules.values():
        for target in _targets(module, modules):
            if target.split(".")[0] == "hpsearch":
                module.imports.add(target)
            else:
                module.external.add(target.split(".")[0])
    return modules


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if module.path.name != "__init__.py":
        base.pop()
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _targets(module: Module, modules: dict[str, Module]) -> Iterator[str]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                yield f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source


def _package(name: str) -> str:
    return ".".join(name.split(".")[:2])


MODULES = _modules()


def test_guarded_paths_exist() -> None:
    # A guard on a path that no longer exists would pass silently after a move.
    guarded = [*FORBIDDEN, OPTUNA_COMPAT, *PRIVATE_ALLOWED]
    missing = [name for name in guarded if name not in MODULES]
    assert not missing, f"layering rules name modules that do not exist: {missing}"
    for package in FORBIDDEN:
        assert any(m == package or m.startswith(package + ".") for m in MODULES)


def _layer_of(name: str) -> str:
    """`hpsearch.worker.loop` -> `worker`, `hpsearch.cli` -> `cli`, `hpsearch` -> `hpsearch`."""
    return name.split(".")[1] if "." in name else name


def _rank(layer: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if layer in names)


def test_every_package_and_top_level_module_has_a_layer() -> None:
    layers = {_layer_of(name) for name in MODULES}
    ranked = set().union(*LAYERS)
    assert layers <= ranked, f"not in LAYERS (nor docs/architecture.md): {layers - ranked}"
    assert ranked <= layers, f"LAYERS names what does not exist: {ranked - layers}"


def test_imports_go_down_the_layers() -> None:
    upward = [
        f"{module.name} ({_layer_of(module.name)}) imports {target} ({_layer_of(target)})"
        for module in MODULES.values()
        for target in sorted(module.imports & MODULES.keys())
        if _rank(_layer_of(target)) < _rank(_layer_of(module.name))
    ]
    assert not upward, "imports up the layers of docs/architecture.md:\n" + "\n".join(upward)


def test_the_architecture_page_draws_these_layers() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split("## Layering rules", 1)[1]
    block = section.split("```\n", 2)[1]
    drawn = [set(line.split("  ")[0].split(", ")) for line in block.splitlines()]
    assert drawn == LAYERS, f"docs/architecture.md draws {drawn}, LAYERS says {LAYERS}"


def test_no_import_cycles() -> None:
    graph = {name: sorted(m.imports & MODULES.keys()) for name, m in MODULES.items()}
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]
    assert not cycles, f"import cycles (lazy imports count too): {cycles}"


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of mutually importing modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    components.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _reach(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in MODULES:
            continue
        seen.add(current)
        todo.extend(MODULES[current].imports)
    return seen


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_keep_heavy_frameworks_out(layer: str) -> None:
    bad = []
    for name in MODULES:
        if name == layer or name.startswith(layer + "."):
            for reached in _reach(name):
                for package in MODULES[reached].external & FORBIDDEN[layer]:
                    bad.append(f"{name} reaches {package} through {reached}")
    assert not bad, "\n".join(sorted(bad))


def test_no_private_name_crosses_a_package() -> None:
    bad = []
    for module in MODULES.values():
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(module, node)
            if not source.startswith("hpsearch") or _package(source) == _package(module.name):
                continue
            private = [p for p in source.split(".") if p.startswith("_") and p != "__init__"]
            names = [a.name for a in node.names if a.name.startswith("_") and a.name[1] != "_"]
            if private or names:
                bad.append(f"{module.name}: from {source} import {', '.join(names) or '...'}")
    assert not bad, "private names imported from another package:\n" + "\n".join(bad)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_private_apis_of_other_libraries_live_in_one_module() -> None:
    """Optuna's private API only in storage/optuna_compat, so an upgrade has one file to check."""
    bad = []
    for module in MODULES.values():
        if module.name == OPTUNA_COMPAT:
            continue
        allowed = PRIVATE_ALLOWED.get(module.name, set())
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(module, node)
                if source.startswith("hpsearch") or source.split(".")[0] in allowed:
                    continue
                if any(_private(p) for p in source.split(".")) or any(
                    _private(a.name) for a in node.names
                ):
                    bad.append(f"{module.name}:{node.lineno}: from {source} import ...")
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if isinstance(owner, ast.Name) and (owner.id, node.attr) == ("os", "_exit"):
                    continue  # the documented way to exit at once, from a signal handler
                if allowed and module.name in PRIVATE_ALLOWED:
                    continue
                bad.append(f"{module.name}:{node.lineno}: ._{node.attr.lstrip('_')}")
    assert not bad, f"private attributes or modules used outside {OPTUNA_COMPAT}:\n" + "\n".join(
        bad
    )


def test_the_top_level_is_a_few_modules_and_packages() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top: {top}"


def test_every_module_reads_in_one_sitting() -> None:
    long = {
        m.name: n
        for m in MODULES.values()
        if (n := len(m.path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_package_says_what_it_exports() -> None:
    bad = []
    for path in sorted(PACKAGE.glob("*/__init__.py")):
        tree = ast.parse(path.read_text())
        names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name)}  # fmt: skip
        if "__all__" not in names or not ast.get_docstring(tree):
            bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"packages without a docstring and __all__: {bad}"


@pytest.mark.parametrize("module", ["hpsearch.spec", "hpsearch.train.options", "hpsearch.cli"])
def test_light_modules_leave_torch_out(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _benchmark_imports() -> dict[str, list[str]]:
    """benchmarks/ modules (scripts importing their siblings by bare name) -> siblings imported."""
    files = {path.stem: path for path in sorted((ROOT / "benchmarks").glob("*.py"))}
    graph = {}
    for name, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets.add(node.module.split(".")[0])
        graph[name] = sorted(targets & files.keys())
    return graph


def test_benchmarks_have_no_import_cycles() -> None:
    graph = _benchmark_imports()
    assert "chaos_checks" in graph["chaos"], "the benchmarks' imports are no longer seen"
    cycles = [c for c in _strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]
    assert not cycles, f"import cycles among benchmarks/ (lazy imports count too): {cycles}"


def test_every_benchmark_module_reads_in_one_sitting() -> None:
    long = {
        path.name: n
        for path in sorted((ROOT / "benchmarks").glob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"benchmarks/ modules over {MAX_LINES} lines: {long}"


# The one home of every attribute key hpsearch writes (who writes it, who reads it).
ATTRS = "hpsearch.storage.attrs"
# Issue 19's rewrite of these files is under way; their keys move to ATTRS when it lands.
ATTR_LITERALS_PENDING: set[str] = set()
# `search` imports nothing of hpsearch, so its one key (a user's objective writes it) stays there.
ATTR_DEFINED_ELSEWHERE = {"hpsearch.search.curves"}
_SETTERS = {"set_user_attr", "set_system_attr", "set_trial_user_attr", "set_trial_system_attr"}


def _is_attrs(node: ast.expr) -> bool:
    """`trial.user_attrs`, `t.system_attrs`, `storage.get_trial_user_attrs(id)` and the like."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr.startswith("get_") and node.func.attr.endswith("_attrs")
    return isinstance(node, ast.Attribute) and node.attr in ("user_attrs", "system_attrs")


def _attr_key(node: ast.AST) -> ast.expr | None:
    """The key of an attribute read or written in place, if `node` is one."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "set_attr_in_session" and len(node.args) > 4:  # optuna_compat's
            return node.args[4]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        name, args = node.func.attr, node.args
        if name in _SETTERS and args:
            return args[1] if name.startswith("set_trial") and len(args) > 1 else args[0]
        if name in ("get", "pop") and args and _is_attrs(node.func.value):
            return args[0]
    if isinstance(node, ast.Subscript) and _is_attrs(node.value):
        return node.slice
    if isinstance(node, ast.Compare) and any(_is_attrs(c) for c in node.comparators):
        return node.left
    return None


def _attr_literals(module: Module) -> Iterator[str]:
    """String keys written or read in place: `user_attrs.get("x")`, `"x" in user_attrs`, ..."""
    for node in ast.walk(module.tree):
        key = _attr_key(node)
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            yield f"{module.name}:{getattr(node, 'lineno', 0)}: {key.value!r}"


def test_attribute_keys_are_named_in_one_module() -> None:
    assert ATTRS in MODULES
    bad = [
        line
        for module in MODULES.values()
        if module.name not in ATTR_LITERALS_PENDING
        for line in _attr_literals(module)
    ]
    for module in MODULES.values():
        if module.name in {ATTRS, *ATTR_LITERALS_PENDING, *ATTR_DEFINED_ELSEWHERE}:
            continue
        bad += [
            f"{module.name}:{node.lineno}: {target.id} defined here"
            for node in module.tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
            and target.id.endswith("_ATTR")
            and isinstance(node.value.value, str)
        ]
    assert not bad, f"attribute keys spelled out; use the names in {ATTRS}:\n" + "\n".join(bad)
