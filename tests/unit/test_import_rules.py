"""Static check of the architecture rule: only the worker may import torch or DA3.

Parent-side code (streamlit_app.py, pages/, da3_core/ outside da3_core/worker/) must not
import torch, torchvision, depth_anything_3 or xformers anywhere, and may import the
worker's heavy modules only inside function bodies (they run in the worker).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"torch", "torchvision", "depth_anything_3", "xformers", "gsplat"}
LIGHT_WORKER_MODULES = {"da3_core.worker", "da3_core.worker.loop", "da3_core.worker.context", "da3_core.worker.tocpu"}


def parent_files() -> list[Path]:
    files = [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "da3_core").glob("*.py"))]
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


def test_parent_code_never_imports_torch_or_da3():
    problems = []
    for path in parent_files():
        for module, top in imports(ast.parse(path.read_text(), str(path))):
            root = module.split(".")[0]
            if root in FORBIDDEN:
                problems.append(f"{path.relative_to(ROOT)} imports {module}")
            elif module.startswith("da3_core.worker.") and top and not any(
                module == m or module.startswith(m + ".") for m in LIGHT_WORKER_MODULES
            ):
                problems.append(f"{path.relative_to(ROOT)} imports {module} at module level (only inside a task body)")
    assert not problems, "\n".join(problems)


def test_rule_checker_catches_violations():
    bad = ast.parse("import torch\nfrom da3_core.worker.model import get_model\ndef f():\n    from da3_core.worker.model import x\n")
    found = list(imports(bad))
    assert ("torch", True) in found
    assert ("da3_core.worker.model", True) in found
    assert ("da3_core.worker.model", False) in found


def test_light_worker_modules_import_nothing_heavy():
    """The parent imports these worker modules (the runner names the loop as the worker's
    target; tasks and the parent use the context and the wire types), so they fall under
    the parent's rule, and may import only light worker modules, even inside functions."""
    problems = []
    for module in sorted(LIGHT_WORKER_MODULES):
        path = ROOT / module.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        assert path.is_file(), f"{module} has no file at {path}"
        for imported, _top in imports(ast.parse(path.read_text(), str(path))):
            if imported.split(".")[0] in FORBIDDEN:
                problems.append(f"{path.relative_to(ROOT)} imports {imported}")
            elif imported.startswith("da3_core.worker.") and not any(
                imported == m or imported.startswith(m + ".") for m in LIGHT_WORKER_MODULES
            ):
                problems.append(f"{path.relative_to(ROOT)} imports the heavy worker module {imported}")
    assert not problems, "\n".join(problems)
