"""The package layout keeps the privilege boundary visible (docs/design.md).

Rules, checked on the source with ``ast`` (every import counts, including
those inside functions; only ``if TYPE_CHECKING:`` blocks are exempt, since
they never run):

- no import cycles between modules;
- ``channel/`` and ``policy/`` never import ``helper/``, ``cli/`` or
  ``authoring/``; ``helper/`` never imports ``cli/`` or ``authoring/``;
- only ``cli/`` imports ``authoring/``; nothing outside ``cli/`` imports it;
- no module is much over 800 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "privsepd"
MAX_LINES = 850  # "about 800": a module past this is split by concern

# (importer prefix, forbidden imported prefixes)
FORBIDDEN = [
    ("privsepd.channel", ("privsepd.helper", "privsepd.cli", "privsepd.authoring")),
    ("privsepd.policy", ("privsepd.helper", "privsepd.cli", "privsepd.authoring")),
    ("privsepd.helper", ("privsepd.cli", "privsepd.authoring")),
]
# Imported prefix -> the only importer prefixes allowed to import it.
ONLY_FROM = {
    "privsepd.authoring": ("privsepd.authoring", "privsepd.cli"),
    "privsepd.cli": ("privsepd.cli", "privsepd.__main__"),  # python -m privsepd
}


def module_names(root: Path) -> dict[str, Path]:
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of the package that *module* imports anywhere (bar TYPE_CHECKING)."""
    found: set[str] = set()

    def target(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                hit = target(alias.name)
                if hit:
                    found.add(hit)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                hit = target(f"{base}.{alias.name}") or target(base)
                if hit:
                    found.add(hit)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    names = module_names(root)
    known = set(names)
    graph = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = _imported(tree, name, path.name == "__init__.py", known)
    return graph


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    bad: list[str] = []
    for importer, imported in sorted(graph.items()):
        for dep in sorted(imported):
            for side, forbidden in FORBIDDEN:
                if _under(importer, side) and any(_under(dep, f) for f in forbidden):
                    bad.append(f"{importer} imports {dep}")
            for guarded, allowed in ONLY_FROM.items():
                if _under(dep, guarded) and not any(_under(importer, a) for a in allowed):
                    bad.append(f"{importer} imports {dep}")
    return sorted(set(bad))


# -- the package itself ----------------------------------------------------------


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph(PACKAGE)) == []


def test_imports_only_cross_the_boundary_in_allowed_directions():
    assert direction_violations(import_graph(PACKAGE)) == []


def test_no_module_is_much_over_800_lines():
    sizes = {
        str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_every_subpackage_named_in_the_design_exists():
    for sub in ("channel", "helper", "policy", "authoring", "cli", "compat"):
        assert (PACKAGE / sub / "__init__.py").is_file(), sub


# -- the checker catches what it guards against (a rule no test breaks is no rule) --


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "privsepd"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (directory / "__init__.py").touch()
    return root


def test_checker_finds_a_cycle_made_by_a_function_level_import(tmp_path):
    root = _tree(
        tmp_path,
        {
            "a.py": "from privsepd.b import x\n",
            "b.py": "def f():\n    from privsepd import a\n",
        },
    )
    assert cycles(import_graph(root)) == [["privsepd.a", "privsepd.b"]]


def test_checker_ignores_type_checking_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "a.py": "from privsepd.b import x\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import privsepd.a\n",
        },
    )
    assert cycles(import_graph(root)) == []


def test_checker_flags_policy_importing_the_helper_side(tmp_path):
    root = _tree(
        tmp_path,
        {"helper/kernel.py": "X = 1\n", "policy/native.py": "from ..helper.kernel import X\n"},
    )
    assert direction_violations(import_graph(root)) == [
        "privsepd.policy.native imports privsepd.helper.kernel"
    ]


def test_checker_flags_the_helper_importing_cli(tmp_path):
    root = _tree(
        tmp_path,
        {"cli/serve.py": "X = 1\n", "helper/monitor.py": "import privsepd.cli.serve\n"},
    )
    assert direction_violations(import_graph(root)) == [
        "privsepd.helper.monitor imports privsepd.cli.serve"
    ]


def test_checker_flags_the_library_importing_authoring(tmp_path):
    root = _tree(
        tmp_path,
        {"authoring/check.py": "X = 1\n", "context.py": "from privsepd.authoring import check\n"},
    )
    assert direction_violations(import_graph(root)) == [
        "privsepd.context imports privsepd.authoring.check"
    ]


# -- the documented map matches the tree ------------------------------------------


def _documented_paths(text: str) -> set[str]:
    import re

    return set(re.findall(r"`(privsepd/[\w/.]*)`", text))


def test_every_path_in_the_design_map_exists():
    repo = PACKAGE.parent
    for doc in (repo / "docs" / "design.md", repo / "README.md"):
        missing = sorted(p for p in _documented_paths(doc.read_text()) if not (repo / p).exists())
        assert missing == [], doc.name


def test_every_module_appears_in_the_design_map():
    repo = PACKAGE.parent
    design = (repo / "docs" / "design.md").read_text()
    section = design[design.index("## Module map") :]
    section = section[: section.index("\n## ", 1)]
    documented = _documented_paths(section)
    absent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(repo)
        if path.name == "__init__.py" and path.parent != PACKAGE:
            continue
        parents = {f"{p.as_posix()}/" for p in rel.parents if p.parts and p != Path("privsepd")}
        if rel.as_posix() not in documented and not parents & documented:
            absent.append(rel.as_posix())
    assert absent == []
