"""The layering rule, checked on the source: ``engine/`` imports nothing from ``remote/``,
``s2s_tui/`` or ``training/``; ``remote/`` and ``training/`` never import ``s2s_tui/``;
``training/`` never imports ``remote/``. Every import counts, at module level or inside a
function (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "engine": {"remote", "s2s_tui", "training"},
    "remote": {"s2s_tui"},
    "training": {"remote", "s2s_tui"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_layer_reaches_up(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    leaks = sorted((str(f.relative_to(ROOT)), dep) for f in files for dep in imported_packages(f) & FORBIDDEN[package])
    assert leaks == []


def test_the_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from training.text import x\n    import remote.server\n")
    assert imported_packages(f) == {"training", "remote"}
