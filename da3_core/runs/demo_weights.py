"""Build untrained demo weights from a DA3 preset: ``python -m da3_core.runs.demo_weights da3-small``.

For machines that cannot reach the model hub. The weights are written under
``<DA3_WORKSPACE>/demo-weights/<preset>`` by the worker (the only process that imports
torch) and later load through the real ``from_pretrained`` path. Their geometry is
meaningless; every feature of the app works with them.
"""

from __future__ import annotations

import sys

from da3_core.config import load_settings
from da3_core.presets import PRESETS_BY_NAME


def main(argv: list[str]) -> int:
    preset = argv[0] if argv else "da3-small"
    if preset not in PRESETS_BY_NAME:
        print(f"Unknown preset {preset!r}; choose one of: {', '.join(PRESETS_BY_NAME)}", file=sys.stderr)
        return 2
    from da3_core.runner import Runner
    from da3_core.runs import tasks

    settings = load_settings()
    runner = Runner(**{**settings.runner_options(), "workers": 1})
    try:
        folder = tasks.build_demo_weights.call(preset, str(settings.demo_weights_dir), runner=runner)  # type: ignore[call-arg]  # runner= is GPUFunction's own keyword, which ParamSpec cannot declare
    finally:
        runner.close()
    print(
        f"Untrained {preset} weights are in {folder}. Choose 'Demo weights' in the app, or set DA3_MODEL=demo:{preset}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
