"""The layout's rules: imports point one way (biasgrid -> grid -> tasks -> storage), and each concept has one
definition."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def layer_violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(REPO)} imports {module}"
            for path in sorted((REPO / package).rglob("*.py"))
            for module in sorted(imported_modules(path))
            if module.split(".")[0] in forbidden]


def test_imports_point_one_way() -> None:
    assert layer_violations("storage", ("biasgrid", "grid", "tasks")) == []
    assert layer_violations("tasks", ("biasgrid", "grid")) == []
    assert layer_violations("grid", ("biasgrid",)) == []


def test_the_biasgrid_package_only_re_exports() -> None:
    """``biasgrid`` is the public face of grid.api: one module of imports, no definitions of its own."""
    assert sorted(p.name for p in (REPO / "biasgrid").glob("*.py")) == ["__init__.py"]
    tree = ast.parse((REPO / "biasgrid" / "__init__.py").read_text(encoding="utf-8"))
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from grid.config import resolve_config\n    import grid.runner\n")
    assert imported_modules(bad) == {"grid.config", "grid.runner"}


def test_one_definition_of_the_vocabulary_and_the_result_columns() -> None:
    """The demographic names and the result tables' column lists are spelled out in one module each."""
    vocabulary = '("asian", "caucasian", "black")'
    columns = '"accuracy_male"'
    spelled = {path.relative_to(REPO).as_posix() for package in ("grid", "tasks", "storage")
               for path in (REPO / package).rglob("*.py") if vocabulary in path.read_text(encoding="utf-8")}
    assert spelled == {"storage/vocab.py"}
    spelled = {path.relative_to(REPO).as_posix() for package in ("grid", "tasks", "storage")
               for path in (REPO / package).rglob("*.py") if columns in path.read_text(encoding="utf-8")}
    assert spelled <= {"tasks/kinds/cell.py", "grid/report/sections/matrices.py", "grid/report/blocks.py"}
    assert "tasks/kinds/cell.py" in spelled


def test_the_report_renders_without_knowing_the_document() -> None:
    """render.py writes blocks out; document.py gathers them: one way (blocks.py holds what both use)."""
    render = imported_modules(REPO / "grid" / "report" / "render.py")
    assert not {m for m in render if m.startswith("grid.report.document")}
    assert "grid.report.render" in imported_modules(REPO / "grid" / "report" / "document.py")


def test_the_command_line_imports_no_private_name() -> None:
    """grid/cli/ modules are thin parsers: what they use of grid/ is public (no ``_name`` imports)."""
    private = []
    for path in sorted((REPO / "grid" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("grid"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert private == []
