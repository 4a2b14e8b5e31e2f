"""The requirement files agree with each other.

requirements.txt is the CPU-only deploy file (Streamlit Community Cloud): PyTorch's CPU wheels
through --find-links, then requirements-app.txt. The Makefile installs requirements-torch.txt +
requirements-app.txt + requirements-dev.txt (+ requirements-ray.txt for the tests) and never
reads requirements.txt, so a package pinned only there would be missing from `make`'s venv.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = "requirements.txt"
APP = "requirements-app.txt"
TORCH = "requirements-torch.txt"
# Installed together somewhere (make: app + torch + dev + ray; GPU servers add gsplat).
INSTALLED_TOGETHER = (APP, TORCH, "requirements-dev.txt", "requirements-ray.txt", "requirements-gsplat.txt")
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9,._-]+\])?==(?P<version>[A-Za-z0-9.+!_-]+)(\s*;.+)?$"
)


def lines(filename: str) -> list[str]:
    """The file's lines without comments and blanks."""
    text = (ROOT / filename).read_text(encoding="utf-8")
    stripped = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in text.splitlines())
    return [line for line in stripped if line]


def options(filename: str) -> list[str]:
    return [line for line in lines(filename) if line.startswith("-")]


def pins(filename: str) -> dict[str, str]:
    """Normalised package name -> pinned version, for every requirement line of the file."""
    found: dict[str, str] = {}
    for line in lines(filename):
        if line.startswith("-"):
            continue
        match = PIN.match(line)
        assert match, f"{filename}: {line!r} is not pinned with =="
        name = re.sub(r"[-_.]+", "-", match["name"]).lower()
        assert name not in found, f"{filename} pins {name} twice"
        found[name] = match["version"]
    return found


@pytest.mark.parametrize("filename", [DEPLOY, *INSTALLED_TOGETHER])
def test_every_requirement_is_pinned_exactly(filename: str) -> None:
    assert pins(filename) or filename == DEPLOY


def test_the_deploy_file_pins_the_cpu_builds_of_the_torch_files_versions() -> None:
    torch = pins(TORCH)
    assert set(torch) == {"torch", "torchvision"}
    assert pins(DEPLOY) == {name: f"{version}+cpu" for name, version in torch.items()}


def test_the_deploy_file_installs_the_app_requirements_and_pins_nothing_else() -> None:
    """Anything the app needs goes in requirements-app.txt, which make installs too."""
    assert f"-r {APP}" in options(DEPLOY)
    assert set(pins(DEPLOY)) == {"torch", "torchvision"}


def test_the_deploy_file_names_no_extra_index() -> None:
    """uv's default first-index strategy takes a package found on an extra index only from
    there, and PyTorch's CPU index mirrors numpy, pillow, jinja2 ...: a pin it lacks would
    fail. --find-links pages that list only torch/torchvision wheels avoid that."""
    for line in options(DEPLOY):
        flag = line.split()[0].split("=")[0]
        assert flag in {"-r", "--requirement", "--find-links", "-f"}, f"{DEPLOY}: {line!r}"
        if flag in {"--find-links", "-f"}:
            assert re.fullmatch(r"https://download\.pytorch\.org/whl/torch(vision)?/", line.split()[-1]), line


def test_no_package_is_pinned_in_two_files_installed_together() -> None:
    owner: dict[str, str] = {}
    for filename in INSTALLED_TOGETHER:
        for name in pins(filename):
            assert name not in owner, f"{name} is pinned in both {owner[name]} and {filename}"
            owner[name] = filename


def test_the_makefile_installs_the_torch_app_dev_and_ray_files_not_the_deploy_file() -> None:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    makefile = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for filename in (TORCH, APP, "requirements-dev.txt", "requirements-ray.txt"):
        assert filename in makefile
    assert not re.search(r"(?<![-\w])requirements\.txt", makefile)
