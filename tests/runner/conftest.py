"""The Ray fixtures of tests/runner/ray_support.py, for every test module of this folder.

Imported here rather than in each module: a fixture imported into a test module and then
named as a test's argument reads to linters as a redefinition of the import (ruff F811).
"""

from tests.runner.ray_support import (  # noqa: F401 - pytest finds fixtures by name in a conftest
    any_runner,
    backend,
    gpu_nodes,
    ray_cluster,
    ray_module_runner,
    token_head,
)
