"""Run every benchmark, print one table, write benchmarks/latest.json.

Run: ``make bench`` (or ``.venv/bin/python -m benchmarks.run``). Each module under
benchmarks/ named ``bench_*.py`` exposes ``run() -> dict[str, float]`` and ``GOALS``
(name -> bound; a name containing ``speedup``, ending in ``_mb_s`` (a rate) or
``_fraction``, or starting with ``cloud_frames`` is "at least", any other name (``_ratio``, ``_s``, ``_ms``, ``_mb``, ``_pct``) is "at most").
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = (
    "bench_runner",
    "bench_isolation",
    "bench_ray",
    "bench_geometry",
    "bench_splat",
    "bench_video",
    "bench_da3_options",
    "bench_hardening",
    "bench_stream",
    "bench_evaluate",
    "bench_cpu",
)


def machine() -> dict[str, str | int]:
    """The machine the figures come from: CPU name and the SIMD/matrix flags that matter."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    from benchmarks.cpu_tasks import cpu_flags

    return {
        "cpu": cpu,
        "cpu_flags": " ".join(cpu_flags()),
        "cores": os.cpu_count() or 0,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def verdict(name: str, value: float, goal: float | None) -> str:
    if goal is None:
        return ""
    at_least = "speedup" in name or name.endswith(("_mb_s", "_fraction")) or name.startswith("cloud_frames")
    ok = value >= goal if at_least else value <= goal
    return ("ok" if ok else "MISSED") + (f" (goal >= {goal:g})" if at_least else f" (goal <= {goal:g})")


def main(argv: list[str]) -> int:
    only = set(argv)
    results: dict[str, float] = {}
    goals: dict[str, float] = {}
    for name in MODULES:
        if only and name not in only:
            continue
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"benchmarks.{name}":
                continue
            raise
        t = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.update(module.run())
        goals.update(getattr(module, "GOALS", {}))
        print(f"  {name} took {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    out = HERE / "latest.json"
    previous = json.loads(out.read_text()) if out.exists() and only else {}
    merged = {**previous.get("results", {}), **results}
    doc = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": merged,
        "goals": {**previous.get("goals", {}), **goals},
    }
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    width = max(len(k) for k in merged) if merged else 10
    print(
        f"\nmachine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, {doc['machine']['memory_gb']} GB,"
        f" flags: {doc['machine'].get('cpu_flags', '?')}"
    )
    print(f"{'metric':<{width}}  {'value':>12}  verdict")
    for key in sorted(merged):
        print(f"{key:<{width}}  {merged[key]:>12.4g}  {verdict(key, merged[key], doc['goals'].get(key))}")
    print(f"\nwritten: {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
