"""The CPU forward pass made to use the machine: each step switchable, each measured.

DA3's network is run as shipped; a few of its modules get instance-level replacements that
act only inside `enabled` (our CPU forward) and fall through to DA3's own code everywhere
else (stock ``inference()`` on the same cached model stays stock: the parity tests rely on it).

Steps (`FastOptions`; `benchmarks/bench_cpu.py` times each with and without, docs/CPU.md has
what each gave):

* ``lean_head``: DA3-SMALL/BASE/LARGE/GIANT's ``DualDPT`` head computes two dense branches
  at full resolution, depth and rays; without ``use_ray_pose`` DA3 deletes the ray branch's
  output unread (the camera decoder gives the poses), and even with it only the last of its
  four pyramid levels is read. The lean head computes what is read: the same operations on
  the same inputs, so float32 is bit-identical.
* ``head_chunk``: frames the head's full-resolution tail (upsampling, output convolutions)
  decodes at once (DA3: 8). Its activations are most of a run's peak memory; one frame at a
  time keeps the peak flat in the frame count. Batch-independent: float32 bit-identical.
* ``pyramid_chunk``: the same for the head's low-resolution pyramid (projections, fusion
  blocks). oneDNN's small convolutions round differently with the batch size (about 1e-7
  of the depth's scale), so float32, which must stay bit-identical to stock, keeps DA3's 8
  there (`for_precision`); bfloat16 (never bit-identical) takes one frame at a time.
* ``fast_rope``: DA3's 2D rotary embedding gathers its cos/sin tables per call (24 calls a
  forward for DA3-SMALL, the same positions each time) and splits, rotates and re-joins
  halves; here the tables are gathered once per forward with the rotation's signs folded in,
  and the rotation is one flip. Every element sees the same multiply, multiply, add as in
  DA3, so float32 is bit-identical.
* ``head_bf16``: where the forward runs in bfloat16 (CPUs with AVX512-BF16/AMX), DA3 still
  runs its DPT head in float32 (it switches autocast off); here the head's convolutions run
  in bfloat16 too, its logits are cast back to float32 before the activations.
* ``channels_last``: the head's feature maps in channels-last layout (oneDNN's native one:
  no reorders around each convolution). Applied with ``head_bf16``.
* ``bf16_backbone``: under autocast the transformer's residual stream stays float32, so
  every block casts it to bfloat16 for each matmul and back, and its norms, scales and
  residual adds move float32 (about half the backbone's time went to casts and those
  element-wise passes). Here the backbone runs as a bfloat16 copy of itself (made once per
  loaded model, 2 bytes a weight) with no autocast: activations in bfloat16 end to end
  (LayerNorm and the attention softmax accumulate in float32 inside their kernels); its
  outputs go on in float32 as before.

Attention: ``attention`` picks PyTorch's SDPA backend; measured on this project's machines
the CPU flash kernel beats the math path and a blocked bf16 matmul attention at every shape
DA3 uses (docs/CPU.md), so ``"flash"`` (PyTorch's default choice) is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling

STEPS: tuple[str, ...] = (
    "lean_head",
    "head_chunk",
    "pyramid_chunk",
    "fast_rope",
    "head_bf16",
    "channels_last",
    "bf16_backbone",
)
BF16_ONLY: tuple[str, ...] = ("pyramid_chunk", "head_bf16", "channels_last", "bf16_backbone")
DA3_HEAD_CHUNK = 8  # DA3's own frames per head chunk


@dataclasses.dataclass(frozen=True)
class FastOptions:
    """Which steps run (see the module doc). ``head_chunk`` 0 means DA3's own 8."""

    lean_head: bool = True
    head_chunk: int = 1
    pyramid_chunk: int = 1
    fast_rope: bool = True
    head_bf16: bool = True
    channels_last: bool = True
    bf16_backbone: bool = True
    attention: str = "flash"

    def without(self, *steps: str) -> FastOptions:
        """These options with ``steps`` off (``head_chunk`` off: DA3's 8)."""
        changes: dict[str, Any] = {}
        for step in steps:
            if step not in STEPS:
                raise ValueError(f"unknown step {step!r}; steps: {', '.join(STEPS)}")
            changes[step] = 0 if step.endswith("_chunk") else False
        return dataclasses.replace(self, **changes)


DEFAULT = FastOptions()
# float32 keeps DA3's chunks of 8 frames for the head's low-resolution pyramid: oneDNN's
# small convolutions round differently with the batch size (by ~1e-7), and float32 must stay
# bit-identical to stock. Its full-resolution tail is batch-independent.
DEFAULT_FP32 = dataclasses.replace(DEFAULT, pyramid_chunk=0)


def for_precision(precision: str) -> FastOptions:
    """The steps taken by default at ``precision`` (``fp32`` or ``bf16``)."""
    return DEFAULT if precision == "bf16" else DEFAULT_FP32


OFF = FastOptions(
    lean_head=False,
    head_chunk=0,
    pyramid_chunk=0,
    fast_rope=False,
    head_bf16=False,
    channels_last=False,
    bf16_backbone=False,
    attention="default",
)


@dataclasses.dataclass
class _Active:
    options: FastOptions
    bf16: bool
    need_aux: bool
    rope_cache: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]]


_ACTIVE: _Active | None = None


def active() -> _Active | None:
    """The options of the forward now running through `enabled`, or None."""
    return _ACTIVE


@contextlib.contextmanager
def enabled(model: Any, options: FastOptions | None, *, bf16: bool, need_aux: bool) -> Iterator[None]:
    """Run DA3's network with ``options`` (None: DA3's own code) inside the block.

    Args:
        model: A loaded ``DepthAnything3`` (its network is patched once, see `install`).
        options: The steps to take.
        bf16: The forward runs under bfloat16 autocast.
        need_aux: The ray branch's output is read (``use_ray_pose``, the Gaussian head, or a
            network without a camera decoder).
    """
    global _ACTIVE
    if options is None:
        yield
        return
    install(model)
    previous = _ACTIVE
    _ACTIVE = _Active(options, bf16, need_aux, {})
    try:
        with _attention_backend(options.attention):
            yield
    finally:
        _ACTIVE = previous


def _attention_backend(name: str) -> contextlib.AbstractContextManager[Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "math": SDPBackend.MATH}
    if name in ("default", ""):
        return contextlib.nullcontext()
    if name not in backends:
        raise ValueError(f"attention={name!r}: use default, flash or math")
    return sdpa_kernel(backends[name])


def install(model: Any) -> int:
    """Patch ``model``'s network once (instance attributes only); return how many modules."""
    net = getattr(model, "model", model)
    if getattr(net, "_da3_cpu_fast", False):
        return int(net._da3_cpu_fast_count)
    count = 0
    head = getattr(net, "head", None)
    if head is not None and type(head).__name__ == "DualDPT":
        head.forward = types.MethodType(_dualdpt_forward, head)
        head._da3_stock_forward_impl = head._forward_impl
        count += 1
    backbone = getattr(net, "backbone", None)
    if backbone is not None:
        backbone.forward = types.MethodType(_backbone_forward, backbone)
        count += 1
    for module in net.modules():
        if type(module).__name__ == "RotaryPositionEmbedding2D":
            module._da3_stock_forward = module.forward
            module.forward = types.MethodType(_rope_forward, module)
            count += 1
    object.__setattr__(net, "_da3_cpu_fast", True)
    object.__setattr__(net, "_da3_cpu_fast_count", count)
    return count


# --------------------------------------------------------------------------------------
# The DualDPT head
# --------------------------------------------------------------------------------------


def _dualdpt_forward(
    self: Any, feats: list[Any], H: int, W: int, patch_start_idx: int, chunk_size: int = DA3_HEAD_CHUNK
) -> Any:  # noqa: N803 - DA3's names
    state = _ACTIVE
    cls_forward = type(self).forward
    if state is None:
        return cls_forward(self, feats, H, W, patch_start_idx, chunk_size)
    from addict import Dict

    opts = state.options
    chunk = opts.head_chunk or chunk_size
    B, S, N, C = feats[0][0].shape
    flat = [feat[0].reshape(B * S, N, C) for feat in feats]
    parts: dict[str, list[torch.Tensor]] = {}
    custom = opts.lean_head or bool(opts.head_chunk or opts.pyramid_chunk) or (opts.head_bf16 and state.bf16)
    group_size = opts.pyramid_chunk or chunk_size
    # The low-resolution stage features go in DA3's own chunks (their 1x1 projections on
    # strided tokens round differently with the batch size); the full-resolution decoding,
    # where the memory is, in ours (batch-independent: bit-identical in float32).
    for s0 in range(0, B * S, group_size):
        group = [f[s0 : s0 + group_size] for f in flat]
        if not custom:  # DA3's own code
            for k, v in self._forward_impl(group, H, W, patch_start_idx).items():
                parts.setdefault(k, []).append(v)
            continue
        resized = _stage_features(self, group, H, W, patch_start_idx, state)
        del group
        for k, v in _decode(self, resized, H, W, state, chunk).items():
            parts.setdefault(k, []).extend(v)
        del resized
    merged = {k: (v[0] if len(v) == 1 else torch.cat(v, dim=0)) for k, v in parts.items()}
    parts.clear()
    return Dict({k: v.reshape(B, S, *v.shape[1:]) for k, v in merged.items()})


def _half(state: _Active) -> contextlib.AbstractContextManager[Any]:
    if state.options.head_bf16 and state.bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _stage_features(
    self: Any, feats: list[torch.Tensor], H: int, W: int, patch_start_idx: int, state: _Active
) -> list[torch.Tensor]:  # noqa: N803 - DA3's names
    """DualDPT._forward_impl's first step: the four token maps normed, projected, resized."""
    opts = state.options
    half = opts.head_bf16 and state.bf16
    with _half(state):
        B, _, C = feats[0].shape
        ph, pw = H // self.patch_size, W // self.patch_size
        resized = []
        for stage_idx, take_idx in enumerate(self.intermediate_layer_idx):
            x = feats[take_idx][:, patch_start_idx:]
            x = self.norm(x)
            x = x.permute(0, 2, 1).reshape(B, C, ph, pw)
            if half and opts.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = self.projects[stage_idx](x)
            if self.pos_embed:
                x = self._add_pos_embed(x, W, H)
            x = self.resize_layers[stage_idx](x)
            resized.append(x)
    return resized


def _decode(
    self: Any, resized: list[torch.Tensor], H: int, W: int, state: _Active, chunk: int
) -> dict[str, list[torch.Tensor]]:  # noqa: N803 - DA3's names
    """The rest of DualDPT._forward_impl, computing only what is read (``lean_head``),
    optionally in bfloat16, with the full-resolution tail ``chunk`` frames at a time. The
    operations on what is computed are DA3's, in its order. Returns each output's chunks."""
    lean = state.options.lean_head
    ph, pw = H // self.patch_size, W // self.patch_size
    with _half(state):
        want_aux = state.need_aux or not lean
        s = self.scratch
        l1, l2, l3, l4 = resized
        del resized
        l1_rn, l2_rn, l3_rn, l4_rn = s.layer1_rn(l1), s.layer2_rn(l2), s.layer3_rn(l3), s.layer4_rn(l4)
        del l1, l2, l3, l4
        out = s.refinenet4(l4_rn, size=l3_rn.shape[2:])
        aux = s.refinenet4_aux(l4_rn, size=l3_rn.shape[2:]) if want_aux else None
        aux_list: list[torch.Tensor] = []
        if aux is not None and self.aux_levels >= 4 and not lean:
            aux_list.append(aux)
        out = s.refinenet3(out, l3_rn, size=l2_rn.shape[2:])
        if aux is not None:
            aux = s.refinenet3_aux(aux, l3_rn, size=l2_rn.shape[2:])
            if self.aux_levels >= 3 and not lean:
                aux_list.append(aux)
        del l3_rn, l4_rn
        out = s.refinenet2(out, l2_rn, size=l1_rn.shape[2:])
        if aux is not None:
            aux = s.refinenet2_aux(aux, l2_rn, size=l1_rn.shape[2:])
            if self.aux_levels >= 2 and not lean:
                aux_list.append(aux)
        del l2_rn
        h_out = int(ph * self.patch_size / self.down_ratio)
        w_out = int(pw * self.patch_size / self.down_ratio)
        n_full = 1 + sum(self.aux_levels >= k for k in (2, 3, 4))
        if not lean:  # DA3's way: every level's output convolved, at the group's batch
            out = s.output_conv1(s.refinenet1(out, l1_rn))
            if aux is not None:
                aux_list.append(s.refinenet1_aux(aux, l1_rn))
            aux = None
            aux_list = [s.output_conv1_aux[i](a) for i, a in enumerate(aux_list)]
            aux_last = aux_list[-1] if aux_list else None
            del aux_list
    result: dict[str, list[torch.Tensor]] = {}
    # From the last fusion block on (half the head's resolution and up) everything is
    # batch-independent (measured: bit-identical frame by frame at process_res 112 to 1008),
    # so it goes ``chunk`` frames at a time.
    for c0 in range(0, out.shape[0], chunk):
        part = slice(c0, c0 + chunk)
        if lean:
            with _half(state):
                main = s.output_conv1(s.refinenet1(out[part], l1_rn[part]))
                side = None
                if aux is not None:  # only the last level is read: DA3 convolves every level's
                    side = s.output_conv1_aux[n_full - 1](s.refinenet1_aux(aux[part], l1_rn[part]))
        else:
            main, side = out[part], None if aux_last is None else aux_last[part]
        for k, v in _tail(self, main, side, H, W, h_out, w_out, state).items():
            result.setdefault(k, []).append(v)
        del main, side
    return result


def _tail(
    self: Any, out: torch.Tensor, last_aux: torch.Tensor | None, H: int, W: int, h_out: int, w_out: int, state: _Active
) -> dict[str, torch.Tensor]:  # noqa: N803 - DA3's names
    """DualDPT's full-resolution tail (upsampling, output convolutions, activations)."""
    from depth_anything_3.model.utils.head_utils import custom_interpolate

    s = self.scratch
    with _half(state):
        fused = custom_interpolate(out, (h_out, w_out), mode="bilinear", align_corners=True)
        if self.pos_embed:
            fused = self._add_pos_embed(fused, W, H)
        main_logits = s.output_conv2(fused)
        del fused
    fmap = main_logits.float().permute(0, 2, 3, 1)
    result = {
        self.head_main: self._apply_activation_single(fmap[..., :-1], self.activation).squeeze(-1),
        f"{self.head_main}_conf": self._apply_activation_single(fmap[..., -1], self.conf_activation),
    }
    del main_logits, fmap
    if last_aux is not None:
        with _half(state):
            if self.pos_embed:
                last_aux = self._add_pos_embed(last_aux, W, H)
            last_logits = s.output_conv2_aux[-1](last_aux)
        fmap_last = last_logits.float().permute(0, 2, 3, 1)
        result[self.head_aux] = self._apply_activation_single(fmap_last[..., :-1], "linear")
        result[f"{self.head_aux}_conf"] = self._apply_activation_single(fmap_last[..., -1], self.conf_activation)
    return result


# --------------------------------------------------------------------------------------
# The backbone in bfloat16
# --------------------------------------------------------------------------------------


def _to(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating tensor in it (lists, tuples) converted to ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, dtype) for v in value)
    return value


def _backbone_forward(self: Any, x: torch.Tensor, **kwargs: Any) -> Any:
    state = _ACTIVE
    if state is None or not (state.bf16 and state.options.bf16_backbone):
        return type(self).forward(self, x, **kwargs)
    twin = self.__dict__.get("_da3_bf16_twin")
    if twin is None:
        import copy

        # A bfloat16 copy, not registered as a submodule (nothing of it reaches state_dict);
        # its blocks keep the cancel hooks and its rope module the patch (deepcopy rebinds).
        twin = copy.deepcopy(self).to(torch.bfloat16)
        del twin.forward  # the copy's own instance patch: its class's forward runs below
        object.__setattr__(self, "_da3_bf16_twin", twin)
    kwargs = {k: _to(v, torch.bfloat16) if k == "cam_token" else v for k, v in kwargs.items()}
    with torch.autocast("cpu", enabled=False):
        feats, aux = type(twin).forward(twin, x.to(torch.bfloat16), **kwargs)
    return _to(feats, torch.float32), _to(aux, torch.float32)


# --------------------------------------------------------------------------------------
# Rotary position embedding
# --------------------------------------------------------------------------------------


def _rope_forward(self: Any, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """DA3's ``RotaryPositionEmbedding2D.forward`` with the tables gathered once per forward.

    DA3: per half h of the features (vertical, horizontal), ``h * cos + rot(h) * sin`` with
    ``rot(h) = cat(-h2, h1)`` and ``cos``/``sin`` gathered at that half's positions. Here
    ``tokens * COS + swap(tokens) * SIN'``: COS the two halves' tables side by side,
    ``swap`` exchanging the quarters within each half (one flip), SIN' the sine tables with
    the sign of ``rot`` folded in (``(-a) * b == a * (-b)`` exactly). Each element gets the
    same two products and one sum, in the same order, as in DA3.
    """
    state = _ACTIVE
    if state is None or not state.options.fast_rope or tokens.shape[-1] % 4:
        return self._da3_stock_forward(tokens, positions)
    d = tokens.shape[-1]
    key = (positions.data_ptr(), tuple(positions.shape), tuple(positions.stride()), tokens.dtype, d)
    tables = state.rope_cache.get(key)
    if tables is None:
        half = d // 2
        max_position = int(positions.max()) + 1
        cos_comp, sin_comp = self._compute_frequency_components(half, max_position, tokens.device, tokens.dtype)
        q = half // 2
        sign = torch.ones(half, dtype=tokens.dtype, device=tokens.device)
        sign[:q] = -1
        cos_parts, sin_parts = [], []
        for axis in (0, 1):
            cos_parts.append(F.embedding(positions[..., axis], cos_comp))
            sin_parts.append(F.embedding(positions[..., axis], sin_comp) * sign)
        tables = (torch.cat(cos_parts, -1)[:, None], torch.cat(sin_parts, -1)[:, None])
        state.rope_cache[key] = tables
    cos, sin = tables
    shape = tokens.shape
    swapped = tokens.reshape(*shape[:-1], 2, 2, d // 4).flip(-2).reshape(shape)
    return (tokens * cos) + (swapped * sin)
