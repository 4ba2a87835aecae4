"""The package's shape: the layer contract, no import cycles, few top-level modules, library errors that
name no command-line flag, and interfaces that use only the public API."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cliplens

PACKAGE = Path(cliplens.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
MAX_TOP_LEVEL_MODULES = 12


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The cliplens modules ``name`` imports anywhere in its code (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import sub" imports the module pkg.sub when there is one, else names of pkg
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_no_import_cycles_counting_imports_inside_functions():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == [], f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The checker itself: two modules that import each other inside functions are a cycle."""
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "b.py").write_text("def g():\n    from .a import f\n")
    known = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    assert imports_of("pkg.a", known["pkg.a"], known) == {"pkg.b"}
    assert imports_of("pkg.b", known["pkg.b"], known) == {"pkg.a"}


def test_layer_contract_holds():
    """import-linter's layers and independence contracts (pyproject.toml), imports inside functions included."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is installed with the test extra"
    proc = subprocess.run([lint], capture_output=True, text=True, cwd=PACKAGE.parents[1], timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") >= 2


def test_at_most_twelve_top_level_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def _message_strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_library_error_names_a_command_line_flag():
    """Library errors and warnings name parameters (``parameter=``); only the CLI names flags."""
    offenders = []
    for name, path in modules().items():
        if name.startswith(("cliplens.cli", "cliplens.bench")):
            continue
        tree = ast.parse(path.read_text())
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     for t in n.targets if isinstance(t, ast.Name)
                     and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
        for node in ast.walk(tree):
            is_warning = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                          and node.func.attr == "warn")
            if not isinstance(node, ast.Raise) and not is_warning:
                continue
            texts = _message_strings(node)
            texts += [constants[n.id] for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in constants]
            for text in texts:
                if FLAG.search(text):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {text!r}")
    assert offenders == []


def test_errors_carry_their_parameter_and_the_cli_names_its_flag():
    from cliplens.cli.common import error_message, parameter_names
    from cliplens.cli.classify import classify

    exc = cliplens.UsageError("must be between 0 and 1 (got 2)", parameter="coverage")
    assert str(exc) == "coverage: must be between 0 and 1 (got 2)"
    assert error_message(exc, parameter_names(classify)) == "--coverage: must be between 0 and 1 (got 2)"
    assert error_message(cliplens.UsageError("no such file", parameter="image"),
                         parameter_names(classify)) == "IMAGE: no such file"


ALLOWED_FOR = {
    "cliplens.cli": ("cliplens.cli", "cliplens.service", "cliplens.bench"),
    "cliplens.service": ("cliplens.service",),
}


def _public_api_breaches(package: str) -> list[str]:
    own = ALLOWED_FOR[package]
    known = modules()
    breaches = []
    for name, path in known.items():
        if not name.startswith(package):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if not base.startswith("cliplens"):
                    continue
                if base == "cliplens":
                    breaches += [f"{name}: {alias.name} is not in cliplens.__all__" for alias in node.names
                                 if alias.name not in cliplens.__all__]
                elif base != "cliplens.errors" and not base.startswith(own):
                    breaches.append(f"{name}: imports {base}")
            elif isinstance(node, ast.Import):
                breaches += [f"{name}: imports {a.name}" for a in node.names
                             if a.name.startswith("cliplens.") and not a.name.startswith(own)]
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                  and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                breaches.append(f"{name}:{node.lineno}: uses the private {node.attr}")
    return breaches


@pytest.mark.parametrize("package", sorted(ALLOWED_FOR))
def test_interfaces_use_only_the_public_api(package):
    """The CLI and the service import cliplens's public API (``cliplens.__all__``, its errors) and their own
    modules, and touch no private attribute of another object."""
    breaches = _public_api_breaches(package)
    if package == "cliplens.cli":  # the CLI's help tidying subclasses typer's parameters, on purpose
        breaches = [b for b in breaches if "_get_number_range_help_str" not in b and "_usage_display_name" not in b]
    assert breaches == []
