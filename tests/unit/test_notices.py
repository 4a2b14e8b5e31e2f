"""What the workers' third-party warnings mean (`da3_core.runs.notices`): the table of known
patterns, read by a pure function, and its fallback."""

from __future__ import annotations

import re

import pytest

from da3_core.runs import notices
from da3_core.runs.notices import PATTERNS, UNKNOWN, explain, harmless_label

# What this machine's workers printed at start and at the first model load (torch 2.14.1,
# xformers 0.0.35, omegaconf 2.4, DA3 without gsplat), word for word, with the module the
# capture names as their source.
SEEN = {
    "xformers-kernels": (
        "xformers",
        "WARNING[XFORMERS]: xFormers can't load C++/CUDA extensions. xFormers was built for:\n"
        "    PyTorch 2.10.0+cu128 with CUDA 1208 (you have 2.14.1+cu130)\n"
        "    Python  3.10.19 (you have 3.11.7)\n"
        "  Please reinstall xformers (see https://github.com/facebookresearch/xformers#installing-xformers)\n"
        "  Memory-efficient attention, SwiGLU, sparse and more won't be available.\n"
        "  Set XFORMERS_MORE_DETAILS=1 for more details",
    ),
    "omegaconf-resolver": (
        "depth_anything_3.cfg",
        "register_new_resolver() is deprecated and will be removed in a future release.\n"
        "Use register_resolver() instead.\n"
        "See https://github.com/hydra-ecosystem/omegaconf/issues/426 for migration instructions.",
    ),
    "gsplat-missing": (
        "depth_anything_3.model.utils.gs_renderer",
        "[WARN ] Dependency `gsplat` is required for rendering 3DGS. Install via: pip install "
        "git+https://github.com/nerfstudio-project/gsplat.git@0b4dddf04cb687367602c01196913cde6a743d70",
    ),
    "hub-local-weights": ("huggingface_hub.hub_mixin", "Loading weights from local directory"),
    "torch-jit-script": (
        "torch.jit._script",
        "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    ),
}

# Messages these libraries are known to print elsewhere (their source text), one per pattern.
LIKELY = {
    "gsplat-cuda": ("gsplat.cuda._backend", "gsplat: No CUDA toolkit found. gsplat will be disabled."),
    "xformers-missing": ("dinov2.layers.attention", "xFormers not available"),
    "xformers-triton": ("xformers", "A matching Triton is not available, some optimizations will not be enabled"),
    "torch-typed-storage": (
        "torch._utils",
        "TypedStorage is deprecated. It will be removed in the future and UntypedStorage "
        "will be the only storage class.",
    ),
    "torch-cuda-amp": (
        "timm.layers",
        "`torch.cuda.amp.autocast(args...)` is deprecated. Please use `torch.amp.autocast('cuda', args...)` instead.",
    ),
    "torch-autocast-no-cuda": (
        "torch.amp.autocast_mode",
        "User provided device_type of 'cuda', but CUDA is not available. Disabling",
    ),
    "torch-cpu-autocast-dtype": (
        "torch.amp.autocast_mode",
        "In CPU autocast, but the target dtype is not supported. Disabling autocast.\n"
        "CPU Autocast only supports dtype of torch.bfloat16, torch.float16 currently.",
    ),
    "torch-sdpa-kernel": (
        "torch.nn.functional",
        "1Torch was not compiled with flash attention. (Triggered internally at ...)",
    ),
    "torch-meshgrid": (
        "torch.functional",
        "torch.meshgrid: in an upcoming release, it will be required to pass the indexing "
        "argument. (Triggered internally at ../aten/src/ATen/native/TensorShape.cpp:3549.)",
    ),
    "torch-load-weights-only": (
        "torch.serialization",
        "You are using `torch.load` with `weights_only=False` (the current default value)",
    ),
    "torch-cuda-init": (
        "torch.cuda",
        "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).",
    ),
    "torchvision-image-extension": (
        "torchvision.io.image",
        "Failed to load image Python extension: libc10_cuda.so: cannot open shared object file",
    ),
    "hub-symlinks": (
        "huggingface_hub.file_download",
        "`huggingface_hub` cache-system uses symlinks by default to efficiently store "
        "duplicated files but your machine does not support them in C:\\cache.",
    ),
    "hub-resume-download": (
        "huggingface_hub.file_download",
        "`resume_download` is deprecated and will be removed in version 1.0.0. Downloads always resume when possible.",
    ),
    "hub-unauthenticated": (
        "huggingface_hub.utils._http",
        "Warning: You are sending unauthenticated requests to the HF Hub.",
    ),
    "timm-deprecated-import": (
        "timm.models.layers",
        "Importing from timm.models.layers is deprecated, please import via timm.layers",
    ),
    "timm-registry": (
        "timm.models._registry",
        "Overwriting vit_small_patch14_dinov2 in registry with a new entrypoint",
    ),
    "pkg-resources": ("setuptools", "pkg_resources is deprecated as an API."),
    "da3-optional-dependency": (
        "depth_anything_3.utils.sh_helpers",
        "[WARN ] Dependency 'e3nn' not found. Required for rotating the camera space SH coeff",
    ),
    "da3-crop": (
        "depth_anything_3.utils.io.input_processor",
        "[WARN ] Images in batch have different sizes [(112, 140), (140, 112)]; "
        "center-cropping all to smallest (112,112)",
    ),
    "capture-overflow": (
        "da3_core",
        "more distinct notices than the dashboard keeps; set DA3_APP_LOG_LEVEL=DEBUG to print them all",
    ),
}


@pytest.mark.parametrize("name", sorted(SEEN))
def test_what_the_workers_printed_here_is_known_and_harmless(name):
    source, message = SEEN[name]
    meaning = explain(message, source)
    assert meaning.name == name and meaning.known
    assert meaning.harmless is True
    assert meaning.meaning and not meaning.meaning.startswith("Not known")


def test_xformers_says_what_dA3_uses_instead():
    meaning = explain(*reversed(SEEN["xformers-kernels"]))
    assert "PyTorch" in meaning.meaning and "attention" in meaning.meaning
    assert "uninstall xformers" in meaning.action


@pytest.mark.parametrize("name", sorted(LIKELY))
def test_likely_notices_are_matched_by_their_own_row(name):
    source, message = LIKELY[name]
    assert explain(message, source).name == name


def test_every_row_has_a_sample_and_a_meaning():
    names = [p.name for p in PATTERNS]
    assert len(names) == len(set(names)), "two rows with one name"
    assert set(names) == set(SEEN) | set(LIKELY), "every row is tested with a message it must match"
    for pattern in PATTERNS:
        re.compile(pattern.regex)
        assert pattern.meaning.endswith(".") and pattern.harmless in (True, False, None)


def test_a_driver_problem_is_not_harmless_and_says_what_to_check():
    meaning = explain(*reversed(LIKELY["torch-cuda-init"]))
    assert meaning.harmless is False and "nvidia-smi" in meaning.action


def test_unknown_notices_are_shown_as_printed():
    meaning = explain("something nobody has seen before", "some.library")
    assert meaning == UNKNOWN and not meaning.known
    assert meaning.harmless is None and "shown as printed" in meaning.meaning
    assert explain("", "") == UNKNOWN


def test_matching_is_case_insensitive_and_reads_the_source():
    assert explain("LOADING WEIGHTS FROM LOCAL DIRECTORY", "huggingface_hub.hub_mixin").name == "hub-local-weights"
    # The same words printed by another module are not the hub's notice.
    assert explain("Loading weights from local directory", "someone.else") == UNKNOWN


def test_the_more_specific_gsplat_row_wins():
    # "gsplat is missing" also mentions gsplat; the CUDA row must not take it.
    assert explain("Dependency `gsplat` is required for rendering 3DGS (CUDA)", "x").name == "gsplat-missing"


def test_harmless_labels():
    assert [harmless_label(v) for v in (True, False, None)] == ["yes", "no", "unknown"]


def test_the_module_is_pure():
    # Parent-side, imported by the Runner page: no Streamlit, no runner, nothing heavy.
    import ast

    tree = ast.parse(open(notices.__file__, encoding="utf-8").read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "re", "dataclasses"}, imported
