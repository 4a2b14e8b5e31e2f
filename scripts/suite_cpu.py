"""Where the test suite's CPU goes: by kind of process and by test module.

Reads `/proc/*/stat` every half second until `--seconds` pass or the file `--stop` appears,
and prints JSON: CPU seconds by kind (spawned workers, Chromium, Streamlit servers, Ray, the
xdist processes) and by test module. A process counts for the module named by
``PYTEST_CURRENT_TEST`` in the environment it started with (processes started by a test or a
fixture carry it; Chromium, started through Playwright's driver, does not). Processes that end
between two reads lose their last half second. Linux only.

    python3 scripts/suite_cpu.py --seconds 1800 --stop /tmp/stop > /tmp/cpu.json &
    make test; touch /tmp/stop
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
KINDS = (
    ("chrom", "chromium"),
    ("spawn_main", "spawned"),
    ("streamlit", "streamlit"),
    ("ray", "ray"),
    ("exec(eval(sys.stdin", "xdist"),
    ("python", "python"),
)


def kind_of(cmdline: str) -> str:
    return next((kind for needle, kind in KINDS if needle in cmdline), "other")


def module_of(pid: str) -> str:
    try:
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"PYTEST_CURRENT_TEST="):
                return entry.split(b"=", 1)[1].decode().split("::")[0]
    except OSError:
        pass
    return "-"


def sample(seconds: float, stop: Path | None) -> dict[str, dict[str, float]]:
    seen: dict[tuple[str, str], list] = {}  # (pid, start time) -> [cpu ticks so far, kind, module]
    by_kind: collections.Counter[str] = collections.Counter()
    by_module: collections.Counter[str] = collections.Counter()
    end = time.monotonic() + seconds
    first = True  # processes running before the start count from the start, not from their birth
    while time.monotonic() < end and not (stop and stop.exists()):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rfind(")") + 2 :].split()
                ticks, key = int(fields[11]) + int(fields[12]), (pid, fields[19])
                if key not in seen:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
                    seen[key] = [ticks if first else 0, kind_of(cmdline), module_of(pid)]
            except (OSError, IndexError, ValueError):
                continue  # the process ended meanwhile
            entry = seen[key]
            delta, entry[0] = (ticks - entry[0]) / HZ, ticks
            by_kind[entry[1]] += delta
            by_module[f"{entry[2]} [{entry[1]}]"] += delta
        first = False
        time.sleep(0.5)
    return {
        "by_kind": {k: round(v, 1) for k, v in by_kind.most_common()},
        "by_module": {k: round(v, 1) for k, v in by_module.most_common(60) if v >= 1},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600)
    parser.add_argument("--stop", type=Path, default=None, help="stop when this file appears")
    args = parser.parse_args()
    print(json.dumps(sample(args.seconds, args.stop), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
