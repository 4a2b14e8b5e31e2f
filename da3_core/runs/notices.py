"""What the warnings printed in the workers mean: a table of known patterns, read by
`explain` (pure; no Streamlit, no torch).

The workers capture what torch, DA3 and their dependencies print (`Notice`, see
`da3_core.runner.inside.capture`); the Runner page lists each one once with its meaning
from here, so a user can tell a harmless version notice from a real problem. A notice the
table does not know is shown as printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Meaning:
    """What one notice means for this dashboard.

    Attributes:
        name: The pattern's short name (``"xformers-kernels"``), ``""`` when not known.
        meaning: One or two sentences: what it means here.
        harmless: True when nothing is wrong for this app; False when something does not
            work as it should; None when not known.
        action: What to do (``""`` when nothing).
    """

    name: str
    meaning: str
    harmless: bool | None
    action: str = ""

    @property
    def known(self) -> bool:
        return bool(self.name)


@dataclass(frozen=True)
class Pattern:
    """One row of the table: a regular expression searched in ``"<source>: <message>"``."""

    name: str
    regex: str
    meaning: str
    harmless: bool | None
    action: str = ""


UNKNOWN = Meaning(
    "",
    "Not known to this dashboard: shown as printed.",
    None,
    "If runs work, it is most likely harmless; DA3_APP_LOG_LEVEL=DEBUG prints it in the terminal with the rest.",
)

# First match wins: the more specific rows first. Searched case-insensitively.
PATTERNS: tuple[Pattern, ...] = (
    # -- seen at every worker start here (torch 2.14, xformers 0.0.35, omegaconf 2.4) -------
    Pattern(
        "xformers-kernels",
        r"xformers can't load c\+\+/cuda extensions|xformers was built for|need to compile c\+\+ extensions to use all xformers",
        "xFormers has no compiled kernels for this torch or Python. DA3 does not need them: its attention is "
        "PyTorch's own (scaled_dot_product_attention), and DA3-GIANT's fused MLP falls back to plain PyTorch.",
        True,
        "Nothing. To silence it, uninstall xformers, or install the xformers build made for your torch.",
    ),
    Pattern(
        "omegaconf-resolver",
        r"register_new_resolver\(\) is deprecated",
        "DA3's config code calls an OmegaConf function that newer OmegaConf renamed; the old name still works.",
        True,
        "Nothing; it goes away when DA3 updates that call.",
    ),
    Pattern(
        "gsplat-missing",
        r"dependency `?gsplat`? is required|no module named '?gsplat",
        "gsplat is not installed. Only the novel-view video of the 3D Gaussians needs it (and a CUDA GPU); "
        "reconstruction, the Gaussian viewer and the 3DGS PLY export work without it.",
        True,
        "For the video, on a CUDA server: pip install -r requirements-gsplat.txt.",
    ),
    Pattern(
        "hub-local-weights",
        r"^huggingface_hub[\w.]*: loading weights from local directory",
        "The model weights were read from a local folder (demo weights or DA3_MODEL_DIR), not downloaded. "
        "Printed at every model load.",
        True,
    ),
    Pattern(
        "torch-jit-script",
        r"`?torch\.jit\.script`? is (deprecated|not supported)",
        "DA3 compiles one small geometry helper with TorchScript (depth_anything_3.utils.geometry), which torch "
        "deprecates in favour of torch.compile. It still works with this torch.",
        True,
    ),
    # -- known from these libraries, not seen here ---------------------------------------
    Pattern(
        "gsplat-cuda",
        r"gsplat.*(cuda|nvcc|compil)|(cuda|nvcc).*gsplat",
        "gsplat cannot use or build its CUDA kernels here, so the novel-view video is unavailable. "
        "Everything else works.",
        True,
        "For the video: a CUDA GPU with the CUDA toolkit (nvcc) on the PATH or in CUDA_HOME.",
    ),
    Pattern(
        "xformers-missing",
        r"xformers (is )?not available|no module named '?xformers",
        "xFormers is not installed. DA3 uses PyTorch's own attention instead.",
        True,
    ),
    Pattern(
        "xformers-triton",
        r"a matching triton is not available",
        "xFormers found no matching Triton and skips a few optional kernels. DA3 does not use them.",
        True,
    ),
    Pattern(
        "torch-typed-storage",
        r"typedstorage is deprecated",
        "A library uses an old torch storage API that torch plans to remove. It works with this torch.",
        True,
    ),
    Pattern(
        "torch-cuda-amp",
        r"torch\.cuda\.amp\.\w+\(args\.\.\.\)` is deprecated|torch\.cuda\.amp.*deprecated",
        "A library calls torch.cuda.amp's autocast, which torch renamed to torch.amp.autocast('cuda'). "
        "It works the same.",
        True,
    ),
    Pattern(
        "torch-autocast-no-cuda",
        r"user provided device_type of 'cuda', but cuda is not available",
        "Code asked for CUDA autocast on a machine without a CUDA GPU; torch turned autocast off. "
        "The worker runs on CPU.",
        True,
    ),
    Pattern(
        "torch-cpu-autocast-dtype",
        r"in cpu autocast, but the target dtype is not supported",
        "Code asked for CPU autocast in a precision this CPU build does not support; torch ran in float32 instead.",
        True,
        "Nothing; DA3_CPU_PRECISION chooses this app's CPU precision.",
    ),
    Pattern(
        "torch-sdpa-kernel",
        r"not compiled with flash attention|flash attention kernel not used|memory efficient kernel not used"
        r"|flash ?attention.*(not available|not supported|disabled)|sdp_kernel.*deprecated",
        "PyTorch chose another attention kernel than the fastest one (not in this build, or not for this GPU or "
        "input). Results are the same; the run may be somewhat slower.",
        True,
    ),
    Pattern(
        "torch-meshgrid",
        r"torch\.meshgrid: in an upcoming release, it will be required to pass the indexing argument",
        "A library calls torch.meshgrid without its indexing argument; today's behaviour is kept.",
        True,
    ),
    Pattern(
        "torch-load-weights-only",
        r"torch\.load.*weights_only",
        "A library loads a checkpoint with torch.load's old default; torch will change that default. "
        "This app loads safetensors.",
        True,
    ),
    Pattern(
        "torch-cuda-init",
        r"cuda initialization|can't initialize nvml|found no nvidia driver|cuda driver.*(insufficient|too old)",
        "torch could not talk to the NVIDIA driver, so the worker runs on CPU (much slower).",
        False,
        "If this machine has a GPU: check `nvidia-smi`, the driver version against torch's CUDA, and "
        "CUDA_VISIBLE_DEVICES.",
    ),
    Pattern(
        "torchvision-image-extension",
        r"failed to load image python extension",
        "torchvision's optional image decoder did not load. This app decodes images with Pillow.",
        True,
    ),
    Pattern(
        "hub-symlinks",
        r"cache-system uses symlinks|symlinks.*not supported|hf_hub_disable_symlinks_warning",
        "The model hub's cache cannot use symbolic links on this disk (often Windows); it copies files "
        "instead and uses more disk space.",
        True,
        "Nothing, or enable symbolic links (Windows developer mode); HF_HUB_DISABLE_SYMLINKS_WARNING=1 silences it.",
    ),
    Pattern(
        "hub-resume-download",
        r"`?resume_download`? is deprecated",
        "A library passes an argument the hub client no longer needs (downloads always resume now).",
        True,
    ),
    Pattern(
        "hub-unauthenticated",
        r"unauthenticated requests to the hf hub|you are sending unauthenticated requests",
        "Downloads from the model hub are anonymous and so rate-limited.",
        True,
        "Set HF_TOKEN if downloads are slow or refused.",
    ),
    Pattern(
        "timm-deprecated-import",
        r"importing from timm\.models\.\w+ is deprecated|timm\.models\.layers.*deprecated",
        "A library imports timm's layers from their old place; timm still provides them there.",
        True,
    ),
    Pattern(
        "timm-registry",
        r"overwriting \w+ in registry",
        "Two libraries register a model under the same name in timm; DA3 does not look it up there.",
        True,
    ),
    Pattern(
        "pkg-resources",
        r"pkg_resources is deprecated",
        "A library uses setuptools' old pkg_resources API. It works.",
        True,
    ),
    Pattern(
        "da3-optional-dependency",
        r"dependency '?(e3nn|scipy)'? not found",
        "An optional DA3 dependency is missing; only the feature it names needs it (spherical-harmonics "
        "rotation, camera trajectories of the video).",
        True,
        "Install it if you need that feature (pip install -r requirements.txt installs what this app uses).",
    ),
    Pattern(
        "da3-crop",
        r"images in batch have different sizes",
        "The frames of a run had different sizes after resizing; DA3 centre-cropped them to the smallest.",
        True,
        "Use frames of one size (one camera) to keep their full field of view.",
    ),
    Pattern(
        "capture-overflow",
        r"^da3_core: more distinct notices than the dashboard keeps",
        "A worker printed more distinct warnings than the page keeps; the rest are counted here.",
        None,
        "Set DA3_APP_LOG_LEVEL=DEBUG and restart the server to see them all in the terminal.",
    ),
)

_COMPILED = tuple((p, re.compile(p.regex, re.IGNORECASE | re.MULTILINE)) for p in PATTERNS)


def explain(message: str, source: str = "") -> Meaning:
    """What a notice means: the first `PATTERNS` row found in ``"<source>: <message>"``,
    else `UNKNOWN`.

    Args:
        message: The notice's text.
        source: The module it came from (``"xformers"``, ``"depth_anything_3.cfg"``).
    """
    text = f"{source}: {message}"
    for pattern, regex in _COMPILED:
        if regex.search(text):
            return Meaning(pattern.name, pattern.meaning, pattern.harmless, pattern.action)
    return UNKNOWN


def harmless_label(harmless: bool | None) -> str:
    """``"yes"``, ``"no"`` or ``"unknown"``, for a table."""
    return "unknown" if harmless is None else ("yes" if harmless else "no")


__all__ = ["Meaning", "PATTERNS", "Pattern", "UNKNOWN", "explain", "harmless_label"]
