"""The package layout rule of DEVELOPERS.md: no `_private` name or module is imported across
subpackages (the root-level shared rooms `_validation`, `_safety`, `_registry` are exempt)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lico_lightning"


def _cross_package_private_imports(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        home = rel.parts[0] if len(rel.parts) > 1 else None
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module):
                continue
            parts = node.module.split(".")
            if parts[0] != "lico_lightning" or len(parts) < 2:
                continue
            if len(parts) == 2 and parts[1].startswith("_"):
                continue  # a shared room at the package root
            if parts[1] == home:
                continue
            private_module = any(p.startswith("_") for p in parts[2:])
            for alias in node.names:
                if private_module or alias.name.startswith("_"):
                    found.append(f"{rel}:{node.lineno}: from {node.module} import {alias.name}")
    return found


def test_no_private_name_is_imported_across_subpackages():
    assert _cross_package_private_imports(PACKAGE) == []


def test_the_scan_finds_a_cross_package_private_import(tmp_path):
    (tmp_path / "explain").mkdir()
    (tmp_path / "explain" / "x.py").write_text(
        "from lico_lightning.functional.lico import _helper\n"
        "from lico_lightning.explain._own import fine\n"
        "from lico_lightning._validation import check_int\n"
    )
    assert _cross_package_private_imports(tmp_path) == [
        "explain/x.py:1: from lico_lightning.functional.lico import _helper"
    ]
