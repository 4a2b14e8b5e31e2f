"""DA3's exporters stay out of a worker until one is used (`da3_core.worker.da3_imports`).

Each check runs in a fresh interpreter: what is imported is the point, and this process may
have imported DA3 already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

HEAVY = ("moviepy", "moviepy.editor", "pycolmap")


def run_fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # DA3 prints its own warnings to stdout (gsplat missing, when its Gaussian code loads)
    return "\n".join(line for line in done.stdout.splitlines() if "[WARN" not in line)


def test_the_api_comes_without_the_exporters_and_each_exporter_still_works():
    out = run_fresh(
        f"""
        import sys
        from da3_core.worker import da3_imports
        api = da3_imports.import_api()
        heavy = {HEAVY!r}
        assert api.DepthAnything3.__name__ == "DepthAnything3"
        print("after api:", [m for m in heavy if m in sys.modules])

        # a submodule imports as usual, the package's own code still not run
        from depth_anything_3.utils.export.npz import export_to_mini_npz
        print("after a submodule:", [m for m in heavy if m in sys.modules], callable(export_to_mini_npz))

        # DA3's own `export` (as api.py holds it) runs the real one
        try:
            api.export(None, "nosuchformat", "/nonexistent")
        except ValueError as exc:
            print("export says:", exc)
        print("after export:", [m for m in heavy if m in sys.modules])
        import depth_anything_3.utils.export as package
        print("names:", package.export is not api.export, package.export_to_colmap.__module__)
        da3_imports.defer_exporters()  # loaded already: nothing changes
        print("same:", sys.modules["depth_anything_3.utils.export"] is package)
        """
    )
    lines = out.splitlines()
    assert lines[0] == "after api: []"
    assert lines[1] == "after a submodule: [] True"
    assert lines[2] == "export says: Unsupported export format: nosuchformat"
    assert lines[3] == "after export: ['moviepy', 'moviepy.editor', 'pycolmap']"
    assert lines[4] == "names: True depth_anything_3.utils.export.colmap"
    assert lines[5] == "same: True"


def test_a_name_the_package_lacks_is_an_attribute_error_after_loading():
    out = run_fresh(
        """
        from da3_core.worker import da3_imports
        da3_imports.import_api()
        import depth_anything_3.utils.export as package
        print(callable(package.export_to_glb))
        try:
            package.no_such_name
        except AttributeError as exc:
            print("AttributeError", exc)
        """
    )
    assert out.splitlines() == [
        "True",
        "AttributeError module 'depth_anything_3.utils.export' has no attribute 'no_such_name'",
    ]


def test_imported_first_the_package_is_left_as_it_is():
    out = run_fresh(
        """
        import sys
        import depth_anything_3.utils.export as package
        from da3_core.worker import da3_imports
        api = da3_imports.import_api()
        print(sys.modules["depth_anything_3.utils.export"] is package, api.export is package.export)
        """
    )
    assert out.strip() == "True True"
