"""Static check of the architecture rule: only a worker may import torch or DA3.

Parent-side code (streamlit_app.py, pages/, and every module under da3_core/ except the DA3
worker package da3_core/worker/) must not import a package of
`da3_core.runner.protocol.FORBIDDEN_PACKAGES` anywhere, and may import da3_core/worker/'s
modules only inside function bodies (task bodies, which run in a worker). Folders are
scanned recursively, so a new sub-package is covered without touching this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

from da3_core.runner.protocol import FORBIDDEN_PACKAGES

ROOT = Path(__file__).resolve().parents[2]
HEAVY_PACKAGE = "da3_core.worker"  # the DA3 code that imports torch; runs only in a worker


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def parent_files(root: Path = ROOT) -> list[Path]:
    """Every Python file the server process may import: all of da3_core but da3_core/worker/."""
    files = [root / "streamlit_app.py", *sorted((root / "pages").rglob("*.py"))]
    files += [
        p
        for p in sorted((root / "da3_core").rglob("*.py"))
        if not module_name(p, root).startswith(HEAVY_PACKAGE + ".") and module_name(p, root) != HEAVY_PACKAGE
    ]
    return [f for f in files if f.exists()]


def imports(tree: ast.AST):
    """Yield (module, at_top_level) for each import in ``tree``."""

    def visit(node: ast.AST, top: bool):
        for child in ast.iter_child_nodes(node):
            inside = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, top
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                yield child.module, top
                for alias in child.names:
                    yield f"{child.module}.{alias.name}", top
            yield from visit(child, inside)

    yield from visit(tree, True)


def problems_in(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for module, top in imports(ast.parse(path.read_text(), str(path))):
        if module.split(".")[0] in FORBIDDEN_PACKAGES:
            found.append(f"{path.relative_to(root)} imports {module}")
        elif module.startswith(HEAVY_PACKAGE + ".") and top:
            found.append(f"{path.relative_to(root)} imports {module} at module level (only inside a task body)")
    return found


def test_parent_code_never_imports_torch_or_da3():
    files = parent_files()
    # The scan reaches nested packages (the runner's backends and its worker-side code).
    assert ROOT / "da3_core/runner/inside/tocpu.py" in files and ROOT / "da3_core/runner/backends/process.py" in files
    problems = [p for path in files for p in problems_in(path)]
    assert not problems, "\n".join(problems)


def test_rule_checker_catches_violations(tmp_path):
    bad = ast.parse(
        "import torch\nfrom da3_core.worker.model import get_model\ndef f():\n    from da3_core.worker.model import x\n"
    )
    found = list(imports(bad))
    assert ("torch", True) in found
    assert ("da3_core.worker.model", True) in found
    assert ("da3_core.worker.model", False) in found
    # A new nested sub-package is scanned without touching this test; da3_core/worker/ is not.
    # (A copy of the layout under tmp_path: nothing is written into the source tree.)
    nested = tmp_path / "da3_core" / "runner" / "backends" / "_rule_probe.py"
    worker = tmp_path / "da3_core" / "worker" / "sub" / "model.py"
    for path in (nested, worker):
        path.parent.mkdir(parents=True)
        path.write_text("def f():\n    import gsplat\n")
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "9_Probe.py").write_text("from da3_core.worker.model import get_model\n")
    files = parent_files(tmp_path)
    assert nested in files and worker not in files and tmp_path / "pages" / "9_Probe.py" in files
    assert problems_in(nested, tmp_path) == ["da3_core/runner/backends/_rule_probe.py imports gsplat"]
    assert problems_in(tmp_path / "pages" / "9_Probe.py", tmp_path) == [
        "pages/9_Probe.py imports da3_core.worker.model at module level (only inside a task body)",
        "pages/9_Probe.py imports da3_core.worker.model.get_model at module level (only inside a task body)",
    ]


def test_one_list_of_forbidden_packages():
    """The result guard in the worker refuses exactly the packages this test refuses."""
    from da3_core.runner import protocol
    from da3_core.runner.inside import tocpu

    assert tocpu.is_forbidden_module is protocol.is_forbidden_module
    assert {"torch", "torchvision", "depth_anything_3", "xformers", "gsplat"} <= set(FORBIDDEN_PACKAGES)
