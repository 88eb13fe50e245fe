"""The package's shape: the engine imports nothing from the analysis or the study, and the
analysis nothing from the study, so the file layout tells the story."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "l1jax"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("l1jax")}


@pytest.mark.parametrize("part, forbidden", [("engine", ("l1jax.analysis", "l1jax.study", "l1jax.cli")),
                                             ("analysis", ("l1jax.study", "l1jax.cli"))])
def test_imports_point_one_way(part, forbidden):
    files = sorted((PKG / part).glob("*.py"))
    assert len(files) > 5
    bad = {f.name: sorted(i for i in _imports(f) if i.startswith(forbidden)) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}
