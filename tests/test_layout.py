"""The package's layout, read from its own import statements: no circle, layers kept.

The import graph is built with ``ast`` from every import statement of every module
under ``skdvl/`` (those inside functions too, so that a lazy import cannot hide a
circle), and checked against the rules of DESIGN.md section 2:

- no circle between modules, nor between subpackages (a top-level module counts as
  a subpackage of its own);
- ``utility/`` imports neither ``sampling/`` nor ``valuation/``; ``sampling/`` does
  not import ``valuation/``; only ``cli/`` and ``utils/`` import the package's face
  (``skdvl/__init__.py``), and nothing imports ``cli/`` or ``utils/`` (but
  ``__main__.py``, which runs the command);
- no underscore name imported from a public module of another subpackage;
- no module-level import below the first function or class (an import placed at the
  bottom to dodge a circle), and no function-local import of a skdvl module, except
  of the modules that need an optional dependency (torch, matplotlib, pytest) and in
  the command line, which imports its commands' dependencies when they run;
- no source file over 600 lines, and every module opens with a docstring.
"""

from __future__ import annotations

import ast
import pathlib
from collections import defaultdict

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "skdvl"
MAX_LINES = 600
#: Subpackages and their forbidden targets (by subpackage name).
FORBIDDEN = {
    "utility": {"sampling", "valuation", "cli", "utils"},
    "sampling": {"valuation", "cli", "utils"},
}
#: Function-local imports of these are the lazy imports of optional dependencies.
OPTIONAL = ("skdvl.influence", "skdvl.plotting", "skdvl.utils.estimator_checks")
#: Subpackages whose function-local imports are allowed (start-up time of a command).
LAZY_OK = {"cli"}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


class _Import:
    def __init__(self, target: str, names: list[str], local: bool, late: bool, line: int):
        self.target, self.names, self.local, self.late, self.line = (
            target, names, local, late, line)


def _imports(module: str) -> list[_Import]:
    """Every skdvl import of ``module``: target module, names taken, where it stands."""
    tree = ast.parse(MODULES[module].read_text())
    out: list[_Import] = []
    first_def = min((n.lineno for n in tree.body
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))),
                    default=10**9)
    top = {id(n) for n in tree.body}

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "skdvl":
                        out.append(_Import(alias.name, [], local,
                                           id(child) in top and child.lineno > first_def,
                                           child.lineno))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, child)
                if target.split(".")[0] != "skdvl":
                    continue
                names = [a.name for a in child.names]
                late = id(child) in top and child.lineno > first_def
                subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
                rest = [n for n in names if f"{target}.{n}" not in MODULES]
                for sub in subs:
                    out.append(_Import(sub, [], local, late, child.lineno))
                if rest or not subs:
                    out.append(_Import(target, rest, local, late, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


IMPORTS = {m: _imports(m) for m in MODULES}


def _edges() -> dict[str, set[str]]:
    """Module -> modules it makes Python run: the target, and the target's packages
    that are not the importer's own (``skdvl/__init__.py`` excepted: it runs first)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, imports in IMPORTS.items():
        for imp in imports:
            if imp.target not in MODULES:
                continue
            edges[module].add(imp.target)
            parts = imp.target.split(".")
            for k in range(2, len(parts)):
                parent = ".".join(parts[:k])
                if not (module == parent or module.startswith(parent + ".")):
                    edges[module].add(parent)
    return edges


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return "skdvl" if len(parts) == 1 else parts[1]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    nodes = set(graph) | {w for ws in graph.values() for w in ws}
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return found


def test_the_graph_is_read():
    # the test can fail: these edges exist, so a parser that reads nothing is caught
    edges = _edges()
    assert "skdvl.sampling._base" in edges["skdvl.sampling._engine"]
    assert "skdvl.sampling._engine" in edges["skdvl.valuation._base"]
    assert len(MODULES) > 50


def test_no_circle_between_modules():
    assert _cycles(_edges()) == []


def test_no_circle_between_subpackages():
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in _edges().items():
        if module == "skdvl":
            continue  # the package's face imports every subpackage
        for target in targets:
            a, b = _subpackage(module), _subpackage(target)
            if a != b and target != "skdvl":
                graph[a].add(b)
    assert _cycles(graph) == []


def test_layers():
    broken = []
    for module, imports in IMPORTS.items():
        sub = _subpackage(module)
        for imp in imports:
            target = _subpackage(imp.target)
            if target in FORBIDDEN.get(sub, ()):
                broken.append(f"{module} imports {imp.target} (line {imp.line})")
            if imp.target == "skdvl" and sub not in {"cli", "utils"}:
                broken.append(f"{module} imports the package's face (line {imp.line})")
            if target in {"cli", "utils"} and sub != target and module != "skdvl.__main__":
                broken.append(f"{module} imports {imp.target} (line {imp.line})")
    assert broken == []


def test_no_private_name_from_a_public_module_of_another_subpackage():
    found = []
    for module, imports in IMPORTS.items():
        for imp in imports:
            private = [n for n in imp.names if n.startswith("_")]
            public_module = not any(p.startswith("_") for p in imp.target.split(".")[1:])
            if private and public_module and _subpackage(imp.target) != _subpackage(module):
                found.append(f"{module}: {private} from {imp.target}")
    assert found == []


def test_no_import_hidden_in_a_function_or_at_the_bottom():
    hidden = []
    for module, imports in IMPORTS.items():
        for imp in imports:
            if imp.late:
                hidden.append(f"{module}:{imp.line} imports {imp.target} below its code")
            elif (imp.local and _subpackage(module) not in LAZY_OK
                  and not imp.target.startswith(OPTIONAL)):
                hidden.append(f"{module}:{imp.line} imports {imp.target} in a function")
    assert hidden == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size_and_docstring(module):
    path = MODULES[module]
    source = path.read_text()
    n_lines = source.count("\n")
    assert n_lines <= MAX_LINES, f"{path} has {n_lines} lines (at most {MAX_LINES})"
    doc = ast.get_docstring(ast.parse(source))
    assert doc and doc.strip(), f"{path} has no module docstring"


#: Every public name of the public modules before the move (their ``__all__`` at 855823d):
#: each must still be importable where it was.
PUBLIC_BEFORE_THE_MOVE = {
    "skdvl": ["ValuationResult", "ModelUtility", "Utility", "UtilityFitWarning",
              "ShapleyValuer", "BanzhafValuer", "BetaShapleyValuer", "LOOValuer",
              "KNNShapley", "DataOOBValuer", "GroupTestingShapleyValuer",
              "DeltaShapleyValuer", "DataCleaner", "CleanedEstimator", "rows_to_keep",
              "ClasswiseShapleyValuer", "ClasswiseModelUtility", "LearnedUtility",
              "LeastCoreValuer"],
    "skdvl.sampling": ["BaseSampler", "PermutationSampler", "AntitheticPermutationSampler",
                       "UniformSampler", "AntitheticSampler", "OwenSampler",
                       "StratifiedSampler", "MSRSampler", "ExactSampler",
                       "RelativeTruncation", "FixedTruncation", "KernelSampler",
                       "LeverageSampler", "RegressionMSRSampler", "SVARMSampler"],
    "skdvl.utility": ["Utility", "ModelUtility", "UtilityFitWarning", "FitReport",
                      "CheckedUtility"],
    "skdvl.stopping": ["Status", "Progress", "StoppingCriterion", "MaxUpdates", "MinUpdates",
                       "MaxSamples", "MaxTime", "AbsoluteStandardError", "RankCorrelation"],
    "skdvl.valuation": ["ShapleyValuer", "BanzhafValuer", "BetaShapleyValuer", "LOOValuer",
                        "KNNShapley", "DataOOBValuer", "GroupTestingShapleyValuer",
                        "DeltaShapleyValuer", "ClasswiseShapleyValuer",
                        "ClasswiseModelUtility", "ClasswisePermutationSampler",
                        "ClasswiseExactSampler", "LeastCoreValuer"],
    "skdvl.cli": ["main"],
    "skdvl.groups": ["GroupedUtility", "check_groups", "groups_by_column", "groups_by_label",
                     "groups_by_clusters"],
    "skdvl.games": ["AirportGame", "AsymmetricVotingGame", "MinerGame", "ShoesGame",
                    "SymmetricVotingGame", "UnanimityGame"],
    "skdvl.utility_learning": ["LearnedUtility"],
    "skdvl.base": ["ValuerMixin", "resolve_task", "check_targets", "TASKS"],
    "skdvl.utils": ["check_valuer", "parametrize_with_valuer_checks", "valuer_randomness"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_BEFORE_THE_MOVE))
def test_every_public_import_of_before_the_move_still_works(module):
    import importlib

    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC_BEFORE_THE_MOVE[module] if not hasattr(mod, name)]
    assert missing == []


def test_the_influence_face_and_the_entry_point_still_work():
    pytest.importorskip("torch")
    import importlib

    influence = importlib.import_module("skdvl.influence")
    for name in ["InfluenceScorer", "NotPositiveDefiniteError", "SequentialInfluenceCalculator",
                 "DaskInfluenceCalculator", "to_dask_array", "dataset_to_dask_arrays",
                 "InfluenceMethod", "Direct", "CG", "LiSSA", "Arnoldi", "EKFAC", "Nystroem",
                 "DataInf"]:
        assert hasattr(influence, name), name
    # the console script named in pyproject.toml resolves
    text = (ROOT.parent / "pyproject.toml").read_text()
    assert 'skdvl = "skdvl.cli:main"' in text
    module, _, name = "skdvl.cli:main".partition(":")
    assert callable(getattr(importlib.import_module(module), name))
