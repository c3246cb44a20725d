"""Layers hold: every import (module level or inside a function) of every package goes down or sideways.

Order (DESIGN.md): worldmodel < recon < memory < scenes < learn < studio; launch.py and examples/ sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("worldmodel", "recon", "memory", "scenes", "learn", "studio")
RANK = {name: i for i, name in enumerate(LAYERS)}
TOP = len(LAYERS)  # launch.py, examples/


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level project package) of every absolute or relative import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.relative_to(ROOT).parts[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: stays inside its own package
                out.append((node.lineno, package))
            elif node.module:
                out.append((node.lineno, node.module.split(".")[0]))
    return [(line, name) for line, name in out if name in RANK]


def project_files() -> list[tuple[Path, int]]:
    files = [(p, RANK[layer]) for layer in LAYERS if (ROOT / layer).is_dir() for p in (ROOT / layer).rglob("*.py")]
    files += [(p, TOP) for p in (ROOT / "examples").rglob("*.py")] + [(ROOT / "launch.py", TOP)]
    return files


def test_no_upward_imports() -> None:
    files = project_files()
    assert len(files) > 30  # the walk really found the packages
    upward = [f"{path.relative_to(ROOT)}:{line} imports {name}"
              for path, rank in files for line, name in imported_packages(path) if RANK[name] > rank]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = ROOT / "worldmodel" / "_layer_probe_tmp.py"
    bad.write_text("def f():\n    from scenes.scene import Scene\n    return Scene\n")
    try:
        assert imported_packages(bad) == [(2, "scenes")]
    finally:
        bad.unlink()
