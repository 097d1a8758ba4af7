"""The package's architecture, enforced: which module may import which, and no cycles.

    minivae/          the core (the model a reader studies) imports neither subpackage;
    minivae/theory/   exact models and identities import only the core's numerics,
                      distributions and checks (and each other), with one exception:
                      minivae.theory.network (identity 18) imports minivae.vae, the network
                      code it checks against the exact model;
    minivae/tool/     the program around them may import anything in minivae.

Imports of minivae modules are written at the top of each module (never inside a
function), so this static reading of the source sees every edge of the graph.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minivae"
THEORY_MAY_IMPORT = {"minivae", "minivae.numerics", "minivae.distributions", "minivae.checks"}
#: the one exception: identity 18 checks the network code itself, so it must import it (the
#: exact models, which are the ground truth, still do not)
THEORY_EXCEPTIONS = {"minivae.theory.network": {"minivae.vae"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The absolute names of the minivae modules an ``ImportFrom`` node refers to."""
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    if not base.startswith("minivae"):
        return []
    # "from . import figures" names a module; "from .vae import VAE" names an object
    names = [f"{base}.{a.name}" for a in node.names]
    return [n for n in names if n in MODULES] or [base]


def edges() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        tree = ast.parse(path.read_text())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                targets.update(resolve(name, path.name == "__init__.py", node))
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("minivae"))
        graph[name] = targets - {name}
    return graph


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = edges()


def test_the_three_layers_are_there():
    assert {"minivae.vae", "minivae.theory.exact", "minivae.tool.train"} <= MODULES
    assert len(MODULES) > 20


SUBPACKAGES = ("minivae.theory", "minivae.tool")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if (m.count(".") == 1
                                          and m not in SUBPACKAGES) or m == "minivae"))
def test_core_imports_no_subpackage(module):
    if module in ("minivae.__main__",):  # the entry point runs the CLI
        return
    bad = {t for t in GRAPH[module] if t.startswith(SUBPACKAGES)}
    assert not bad, f"{module} (core) imports {sorted(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("minivae.theory")))
def test_theory_imports_only_numerics_and_distributions(module):
    allowed = THEORY_MAY_IMPORT | THEORY_EXCEPTIONS.get(module, set())
    bad = {t for t in GRAPH[module] if not t.startswith("minivae.theory") and t not in allowed}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_only_the_network_identity_imports_the_network():
    importers = {m for m, targets in GRAPH.items()
                 if m.startswith("minivae.theory") and "minivae.vae" in targets}
    assert importers == {"minivae.theory.network"}
    assert "minivae.vae" not in GRAPH["minivae.theory.exact"]


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node, path):
        state[node] = 1
        for nxt in GRAPH.get(node, ()):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_minivae_imports_are_at_the_top():
    """No function-level imports of minivae modules: the graph above would not see them."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "")
                                                         .startswith("minivae")):
                    pytest.fail(f"{path.name}:{node.lineno} imports inside {func.name}()")


def test_public_entry_points_still_work():
    import subprocess
    import sys

    from minivae import VAE  # noqa: F401  (the top-level import keeps working)

    out = subprocess.run([sys.executable, "-m", "minivae", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("minivae ")
