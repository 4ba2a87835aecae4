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


#: The interfaces, which speak in flags; everything else is library and names parameters.
INTERFACES = ("cliplens.cli", "cliplens.service", "cliplens.bench")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and its functions (they may speak of flags)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def flags_in_library_strings(path: Path) -> list[str]:
    """Every string constant of a module (f-string parts included, docstrings and comments not) that names a
    command-line flag, as ``LINE: text``."""
    tree = ast.parse(path.read_text())
    docstrings = _docstrings(tree)
    return [f"{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and FLAG.search(node.value)]


def test_no_library_error_names_a_command_line_flag():
    """Library text (errors, warnings, reports, summaries: every string constant outside the interfaces) names
    parameters (``parameter=``), never flags; only the CLI names flags."""
    offenders = [f"{path.relative_to(PACKAGE)}:{found}" for name, path in modules().items()
                 if not name.startswith(INTERFACES) for found in flags_in_library_strings(path)]
    assert offenders == []


def test_the_flag_check_finds_flags_in_any_library_string(tmp_path):
    """The checker itself: a flag in a list of report sentences is found, as in an error; docstrings are not."""
    module = tmp_path / "m.py"
    module.write_text('"""Docs may say --alt-classes."""\n'
                      'LINES = ["try other class sets with --alt-classes."]\n'
                      'def f(x):\n    raise ValueError(f"{x}: pass --overwrite")\n')
    found = flags_in_library_strings(module)
    assert len(found) == 2 and "--alt-classes" in found[0] and "--overwrite" in found[1]


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


# --- names that point elsewhere --------------------------------------------------------------------------

ROOT = PACKAGE.parents[1]
REFERENCE = re.compile(r":(?:mod|func|class|meth|data|attr):`~?(cliplens(?:\.\w+)+)`")
TEST_FILE = re.compile(r"\btests/[\w/]+\.py\b")


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` names a cliplens module, or something defined in one (``cliplens.x.Class.method``)."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_docstrings_name_modules_objects_and_test_files_that_exist():
    """A renamed module, a moved object or a moved test file leaves no stale name behind in the package."""
    stale = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        stale += [f"{path.relative_to(ROOT)}: {name}" for name in REFERENCE.findall(text) if not _resolves(name)]
        stale += [f"{path.relative_to(ROOT)}: {name}" for name in TEST_FILE.findall(text)
                  if not (ROOT / name).is_file()]
    assert stale == []


BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_scripts_use_the_public_api_and_start(script):
    """The scripts in benchmarks/ import ``cliplens`` and use only ``cliplens.__all__``, so they keep working
    when the package is regrouped; each starts (``--help``)."""
    breaches = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cliplens"):
            breaches += [f"from {node.module} import {a.name}" for a in node.names
                         if node.module != "cliplens" or a.name not in cliplens.__all__]
        elif isinstance(node, ast.Import):
            breaches += [f"import {a.name}" for a in node.names if a.name.startswith("cliplens.")]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cliplens"
              and node.attr not in cliplens.__all__):
            breaches.append(f"cliplens.{node.attr}")
    assert breaches == []
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
