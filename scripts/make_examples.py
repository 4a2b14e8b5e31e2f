"""Render the bundled example scenes (``examples/<scene>/NN.jpg`` + ``scene.json``).

The app must run offline, so its example scenes are synthetic: small analytic ray
casters in plain numpy (planes, boxes, spheres, cylinders; procedural textures; a light
with hard shadows; 2x2 supersampling), rendered from a few nearby camera poses. The exact
poses and intrinsics go into ``scene.json`` (OpenCV camera axes: x right, y down, z
forward; ``extrinsics`` world-to-camera [R|t]; ``intrinsics`` K in pixels of the JPEGs,
pixel centres at integer coordinates). World: metres, y up.

Deterministic: no random numbers, only integer hashes of positions; re-running on the same
machine writes byte-identical files (elsewhere a different libm or libjpeg build can move
a few pixels by a level or so).

Usage::

    python scripts/make_examples.py            # writes examples/ next to this folder
    python scripts/make_examples.py --out DIR  # somewhere else
    python scripts/make_examples.py --only room
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 320, 240
JPEG_QUALITY = 90
EPS = 1e-4
INF = np.float64(1e30)

Vec = np.ndarray  # (3,) or (N, 3) float64
Y_UP = np.array([0.0, 1.0, 0.0])  # the default `up` of `look_at` (never modified)


# --------------------------------------------------------------------------------------
# Deterministic procedural noise (integer hashing: identical on every platform)
# --------------------------------------------------------------------------------------


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int = 0) -> np.ndarray:
    """Integer lattice -> uniform [0, 1) float64, via a uint32 xorshift-multiply mix."""
    with np.errstate(over="ignore"):
        h = (
            (ix.astype(np.int64).astype(np.uint32) * np.uint32(0x8DA6B343))
            ^ (iy.astype(np.int64).astype(np.uint32) * np.uint32(0xD8163841))
            ^ np.uint32((seed * 0x9E3779B9) & 0xFFFFFFFF)
        )
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x7FEB352D)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x846CA68B)
        h ^= h >> np.uint32(16)
    return h.astype(np.float64) / 4294967296.0


def value_noise(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth 2D value noise in [0, 1)."""
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = _hash(x0, y0, seed), _hash(x0 + 1, y0, seed)
    c, d = _hash(x0, y0 + 1, seed), _hash(x0 + 1, y0 + 1, seed)
    return (a * (1 - sx) + b * sx) * (1 - sy) + (c * (1 - sx) + d * sx) * sy


def fbm(x: np.ndarray, y: np.ndarray, seed: int = 0, octaves: int = 4) -> np.ndarray:
    """Fractal noise in about [0, 1)."""
    total, amp, norm = np.zeros_like(x), 1.0, 0.0
    for o in range(octaves):
        total += amp * value_noise(x * 2**o, y * 2**o, seed + 17 * o)
        norm += amp
        amp *= 0.5
    return total / norm


def srgb(hex_or_tuple: str | tuple[float, float, float]) -> np.ndarray:
    """An sRGB colour ('#rrggbb' or 0..1 tuple) as linear RGB (3,)."""
    if isinstance(hex_or_tuple, str):
        h = hex_or_tuple.lstrip("#")
        c = np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], np.float64) / 255.0
    else:
        c = np.asarray(hex_or_tuple, np.float64)
    return c**2.2


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------

Material = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(world points (N,3), local points (N,3), normals (N,3)) -> linear albedo (N,3)."""


@dataclass
class Hit:
    t: np.ndarray  # (N,) distance along the ray (INF: no hit)
    normal: np.ndarray  # (N,3) world
    local: np.ndarray  # (N,3) point in the object's frame (for textures)
    obj: np.ndarray  # (N,) int index of the object, -1 none


def _rot_y(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class Shape:
    material: Material
    specular: float = 0.0
    casts_shadow: bool = True

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError


@dataclass
class Sphere(Shape):
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 1.0

    def intersect(self, o, d):
        c = np.asarray(self.center)
        oc = o - c
        b = np.einsum("ij,ij->i", oc, d)
        cc = np.einsum("ij,ij->i", oc, oc) - self.radius**2
        disc = b * b - cc
        ok = disc > 0
        sq = np.sqrt(np.where(ok, disc, 0.0))
        t0, t1 = -b - sq, -b + sq
        t = np.where(t0 > EPS, t0, np.where(t1 > EPS, t1, INF))
        t = np.where(ok, t, INF)
        p = o + d * np.where(t < INF, t, 0.0)[:, None]
        n = (p - c) / self.radius
        return t, n, p - c


@dataclass
class Box(Shape):
    """An oriented box: centre, half sizes, yaw about the world y axis."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    half: tuple[float, float, float] = (0.5, 0.5, 0.5)
    yaw: float = 0.0
    inside: bool = False  # True: the camera is inside (a room); hit the far faces

    def intersect(self, o, d):
        rot = _rot_y(self.yaw)
        c, h = np.asarray(self.center), np.asarray(self.half)
        lo_ = (o - c) @ rot  # world -> local (rot is local -> world)
        ld = d @ rot
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(ld) < 1e-12, 1e-12, ld)
        t1, t2 = (-h - lo_) * inv, (h - lo_) * inv
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        if self.inside:
            t = tmax.min(axis=1)
            axis = tmax.argmin(axis=1)
            ok = t > EPS
        else:
            tn, tf = tmin.max(axis=1), tmax.min(axis=1)
            axis = tmin.argmax(axis=1)
            ok = (tn <= tf) & (tn > EPS)
            t = tn
        t = np.where(ok, t, INF)
        local = lo_ + ld * np.where(ok, t, 0.0)[:, None]
        n_local = np.zeros_like(local)
        sign = np.sign(ld[np.arange(len(ld)), axis])
        n_local[np.arange(len(ld)), axis] = -sign  # faces the incoming ray (inside: inward)
        return t, n_local @ rot.T, local


@dataclass
class Cylinder(Shape):
    """A vertical capped cylinder: base centre (x, y0, z), radius, height."""

    base: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 0.5
    height: float = 1.0

    def intersect(self, o, d):
        bx, by, bz = self.base
        ox, oz = o[:, 0] - bx, o[:, 2] - bz
        dx, dz = d[:, 0], d[:, 2]
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        cc = ox * ox + oz * oz - self.radius**2
        disc = b * b - a * cc
        ok = (disc > 0) & (a > 1e-12)
        sq = np.sqrt(np.where(ok, disc, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = np.where(ok, (-b - sq) / np.where(a > 1e-12, a, 1.0), INF)
        y_side = o[:, 1] + d[:, 1] * np.where(t_side < INF, t_side, 0.0)
        side_ok = (t_side > EPS) & (y_side >= by) & (y_side <= by + self.height)
        t_side = np.where(side_ok, t_side, INF)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cap = (by + self.height - o[:, 1]) / np.where(np.abs(d[:, 1]) < 1e-12, 1e-12, d[:, 1])
        px = ox + dx * t_cap
        pz = oz + dz * t_cap
        cap_ok = (t_cap > EPS) & (px * px + pz * pz <= self.radius**2) & (d[:, 1] < 0)
        t_cap = np.where(cap_ok, t_cap, INF)
        t = np.minimum(t_side, t_cap)
        p = o + d * np.where(t < INF, t, 0.0)[:, None]
        local = p - np.asarray(self.base)
        n = np.zeros_like(p)
        is_cap = t_cap < t_side
        n[:, 0] = np.where(is_cap, 0.0, local[:, 0] / self.radius)
        n[:, 2] = np.where(is_cap, 0.0, local[:, 2] / self.radius)
        n[:, 1] = np.where(is_cap, 1.0, 0.0)
        return t, n, local


@dataclass
class GroundPlane(Shape):
    """The infinite plane y = height (seen from above)."""

    height: float = 0.0

    def intersect(self, o, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.height - o[:, 1]) / np.where(np.abs(d[:, 1]) < 1e-12, -1e-12, d[:, 1])
        ok = (t > EPS) & (d[:, 1] < 0)
        t = np.where(ok, t, INF)
        p = o + d * np.where(ok, t, 0.0)[:, None]
        n = np.zeros_like(p)
        n[:, 1] = 1.0
        return t, n, p


@dataclass
class Light:
    position: tuple[float, float, float] | None = None  # point light, or
    direction: tuple[float, float, float] | None = None  # directional (towards the light)
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: float = 1.0


@dataclass
class Scene:
    key: str
    title: str
    description: str
    shapes: list[Shape]
    lights: list[Light]
    ambient: float
    cameras: list[tuple[tuple[float, float, float], tuple[float, float, float]]]  # (eye, target)
    hfov_deg: float = 62.0
    sky: Callable[[np.ndarray], np.ndarray] | None = None
    exposure: float = 1.0


# --------------------------------------------------------------------------------------
# Cameras (OpenCV convention)
# --------------------------------------------------------------------------------------


def look_at(eye: Vec, target: Vec, up: Vec = Y_UP) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera (R, t) for an OpenCV camera at ``eye`` looking at ``target``."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    f = target - eye
    f /= np.linalg.norm(f)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    dn = np.cross(f, r)
    rot = np.stack([r, dn, f])  # rows: camera axes in world coordinates
    return rot, -rot @ eye


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def trace(scene: Scene, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shade rays; returns (linear RGB (N,3), depth t (N,))."""
    n_rays = len(o)
    best = np.full(n_rays, INF)
    normal = np.zeros((n_rays, 3))
    local = np.zeros((n_rays, 3))
    obj = np.full(n_rays, -1)
    for i, shape in enumerate(scene.shapes):
        t, n, loc = shape.intersect(o, d)
        closer = t < best
        best = np.where(closer, t, best)
        normal[closer] = n[closer]
        local[closer] = loc[closer]
        obj[closer] = i
    color = np.zeros((n_rays, 3))
    hit = obj >= 0
    if scene.sky is not None:
        color[~hit] = scene.sky(d[~hit])
    p = o + d * np.where(hit, best, 0.0)[:, None]
    # face the normal towards the viewer (rooms are seen from inside)
    flip = np.einsum("ij,ij->i", normal, d) > 0
    normal[flip] *= -1
    for i, shape in enumerate(scene.shapes):
        m = obj == i
        if not m.any():
            continue
        albedo = shape.material(p[m], local[m], normal[m])
        light_sum = np.full((m.sum(), 3), scene.ambient)
        spec_sum = np.zeros((m.sum(), 3))
        pm, nm = p[m], normal[m]
        for light in scene.lights:
            if light.position is not None:
                to_l = np.asarray(light.position) - pm
                dist = np.linalg.norm(to_l, axis=1)
                ldir = to_l / dist[:, None]
                falloff = light.intensity / (1.0 + 0.08 * dist**2)
            else:
                ldir = np.broadcast_to(np.asarray(light.direction) / np.linalg.norm(light.direction), pm.shape)
                dist = np.full(len(pm), INF)
                falloff = np.full(len(pm), light.intensity)
            lam = np.clip(np.einsum("ij,ij->i", nm, ldir), 0.0, None)
            lit = lam > 0
            if lit.any():
                so = pm[lit] + nm[lit] * 1e-3
                sd = np.ascontiguousarray(ldir[lit])
                blocked = np.zeros(lit.sum(), bool)
                for other in scene.shapes:
                    if not other.casts_shadow:
                        continue
                    ts, _, _ = other.intersect(so, sd)
                    blocked |= ts < dist[lit] - 1e-3
                vis = np.ones(len(pm))
                vis[np.flatnonzero(lit)[blocked]] = 0.0
                lam = lam * vis
            light_sum += (lam * falloff)[:, None] * np.asarray(light.color)
            if shape.specular > 0:
                h = ldir - d[m]
                h /= np.linalg.norm(h, axis=1)[:, None]
                sp = np.clip(np.einsum("ij,ij->i", nm, h), 0.0, None) ** 40 * (lam > 0)
                spec_sum += (shape.specular * sp * falloff)[:, None] * np.asarray(light.color)
        color[m] = albedo * light_sum + spec_sum
    return color * scene.exposure, np.where(hit, best, np.inf)


def render(
    scene: Scene, eye, target, width: int = WIDTH, height: int = HEIGHT
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render one view; returns (uint8 RGB (H,W,3), R (3,3), t (3,), K (3,3))."""
    rot, tvec = look_at(np.asarray(eye), np.asarray(target))
    k = intrinsics(width, height, scene.hfov_deg)
    k_inv = np.linalg.inv(k)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    acc = np.zeros((height * width, 3))
    offsets = [(-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)]
    center = -rot.T @ tvec
    for du, dv in offsets:
        pix = np.stack([(u + du).ravel(), (v + dv).ravel(), np.ones(u.size)], axis=1)
        dirs = (pix @ k_inv.T) @ rot  # camera -> world: R^T x, as row vectors x @ R
        dirs /= np.linalg.norm(dirs, axis=1)[:, None]
        origins = np.broadcast_to(center, dirs.shape).copy()
        col, _ = trace(scene, origins, dirs)
        acc += col
    lin = acc / len(offsets)
    # gentle filmic roll-off, then sRGB-ish gamma
    lin = lin / (1.0 + 0.15 * lin)
    img = np.clip(lin, 0.0, 1.0) ** (1 / 2.2)
    return (img.reshape(height, width, 3) * 255.0 + 0.5).astype(np.uint8), rot, tvec, k


# --------------------------------------------------------------------------------------
# Materials
# --------------------------------------------------------------------------------------


def checker_floor(tile: float, c1: str, c2: str, grout: str = "#3a3530", seed: int = 1) -> Material:
    a, b, g = srgb(c1), srgb(c2), srgb(grout)

    def mat(p, loc, n):
        x, z = p[:, 0] / tile, p[:, 2] / tile
        ix, iz = np.floor(x), np.floor(z)
        pick = ((ix + iz) % 2 == 0)[:, None]
        base = np.where(pick, a, b)
        jitter = 0.85 + 0.3 * _hash(ix, iz, seed)[:, None]
        speck = 0.9 + 0.2 * fbm(p[:, 0] * 9, p[:, 2] * 9, seed + 3)[:, None]
        fx, fz = x - ix, z - iz
        edge = ((np.minimum(fx, 1 - fx) < 0.025) | (np.minimum(fz, 1 - fz) < 0.025))[:, None]
        return np.where(edge, g, base * jitter * speck)

    return mat


def painted_wall(color: str, seed: int, baseboard: str = "#f2efe8", frames: list | None = None) -> Material:
    """Painted plaster with a baseboard and optional pictures: frames = [(axis, u0, u1, y0, y1, seed)]."""
    base, board = srgb(color), srgb(baseboard)
    frames = frames or []

    def mat(p, loc, n):
        horizontal = np.where(np.abs(n[:, 0]) > 0.5, p[:, 2], p[:, 0])
        noise = 0.9 + 0.2 * fbm(horizontal * 3.0, p[:, 1] * 3.0, seed)
        out = base * noise[:, None]
        out = np.where((p[:, 1] < 0.12)[:, None], board * (0.95 + 0.05 * noise[:, None]), out)
        for axis, u0, u1, y0, y1, fseed in frames:
            facing = np.abs(n[:, axis]) > 0.5
            uu = p[:, 2] if axis == 0 else p[:, 0]
            inside = facing & (uu >= u0) & (uu <= u1) & (p[:, 1] >= y0) & (p[:, 1] <= y1)
            border = inside & ~((uu >= u0 + 0.06) & (uu <= u1 - 0.06) & (p[:, 1] >= y0 + 0.06) & (p[:, 1] <= y1 - 0.06))
            art = painting((uu - u0) / (u1 - u0), (p[:, 1] - y0) / (y1 - y0), fseed)
            out = np.where(inside[:, None], art, out)
            out = np.where(border[:, None], srgb("#2b1d12"), out)
        return out

    return mat


def painting(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """An abstract painting: a few soft colour fields and blobs (u, v in 0..1)."""
    palette = [srgb(c) for c in ("#d94f30", "#f2c14e", "#2e86ab", "#3f7d20", "#f5f0e1", "#5b2a86", "#111111")]
    out = np.zeros((len(u), 3)) + palette[4] * 0.9
    for k in range(7):
        cx, cy = _hash(np.array([k]), np.array([seed]), 5)[0], _hash(np.array([k]), np.array([seed]), 6)[0]
        rad = 0.12 + 0.18 * _hash(np.array([k]), np.array([seed]), 7)[0]
        col = palette[int(_hash(np.array([k]), np.array([seed]), 8)[0] * len(palette))]
        wob = 0.05 * (fbm(u * 6 + k, v * 6, seed + k) - 0.5)
        inside = (u - cx) ** 2 + (v - cy) ** 2 < (rad + wob) ** 2
        out = np.where(inside[:, None], col, out)
    stripes = (np.floor(u * 9 + 3 * v) % 2 == 0) & (v > 0.78)
    out = np.where(stripes[:, None], palette[6] * 1.0 + 0.05, out)
    return out * (0.9 + 0.2 * fbm(u * 40, v * 40, seed)[:, None])


def wood(color: str = "#9a6a3c", seed: int = 4, scale: float = 1.0, axis: int = 0) -> Material:
    base = srgb(color)

    def mat(p, loc, n):
        along = loc[:, axis] * scale
        across = loc[:, 2 if axis == 0 else 0] * scale + loc[:, 1] * scale
        grain = np.sin(across * 40 + 6 * fbm(along * 2, across * 2, seed)) * 0.5 + 0.5
        plank = np.floor(across * 6)
        tone = 0.8 + 0.35 * _hash(plank, plank * 3, seed)[:, None]
        return base * tone * (0.75 + 0.35 * grain[:, None])

    return mat


def solid(color: str, noise: float = 0.06, seed: int = 9, freq: float = 8.0) -> Material:
    base = srgb(color)

    def mat(p, loc, n):
        f = 1.0 - noise + 2 * noise * fbm(loc[:, 0] * freq + loc[:, 1] * 3.1, loc[:, 2] * freq + loc[:, 1] * 1.7, seed)
        return base * f[:, None]

    return mat


def crate(color: str = "#c8955a", seed: int = 12) -> Material:
    """Cardboard box with a tape strip and a printed label."""
    base, tape, ink = srgb(color), srgb("#d9c9a3"), srgb("#2a2a2a")

    def mat(p, loc, n):
        out = base * (0.9 + 0.2 * fbm(loc[:, 0] * 6 + loc[:, 1] * 4, loc[:, 2] * 6, seed))[:, None]
        top = np.abs(n[:, 1]) > 0.5
        strip = top & (np.abs(loc[:, 0]) < 0.05)
        out = np.where(strip[:, None], tape, out)
        u = np.where(np.abs(n[:, 0]) > 0.5, loc[:, 2], loc[:, 0])
        label = (~top) & (np.abs(u) < 0.14) & (np.abs(loc[:, 1] - 0.02) < 0.07)
        arrows = label & (np.floor((u + 0.14) * 30) % 3 == 0)
        out = np.where(label[:, None], srgb("#f1ece0"), out)
        return np.where(arrows[:, None], ink, out)

    return mat


def rug(seed: int = 21) -> Material:
    c = [srgb(x) for x in ("#7a1f2b", "#d8b26e", "#1f3b5a", "#efe6d2")]

    def mat(p, loc, n):
        u, v = np.abs(loc[:, 0]), np.abs(loc[:, 2])
        ring = np.floor(np.maximum(u / 1.1, v / 0.75) * 7)
        diamond = np.floor((u + v) * 3) % 2
        idx = ((ring + diamond) % 4).astype(int)
        out = np.stack(c)[idx]
        return out * (0.85 + 0.25 * fbm(loc[:, 0] * 30, loc[:, 2] * 30, seed))[:, None]

    return mat


def bricks(color: str = "#a0522d", mortar: str = "#cfc6b8", seed: int = 31, windows: bool = True) -> Material:
    base, mort, glass, frame = srgb(color), srgb(mortar), srgb("#22303c"), srgb("#e9e4da")

    def mat(p, loc, n):
        uu = np.where(np.abs(n[:, 0]) > 0.5, loc[:, 2], loc[:, 0])
        yy = loc[:, 1]
        # Bricks drawn twice life size: real ones alias into moire at 320 px.
        row = np.floor(yy / 0.16)
        shift = (row % 2) * 0.24
        col = np.floor((uu + shift) / 0.48)
        fx = (uu + shift) / 0.48 - col
        fy = yy / 0.16 - row
        is_mortar = (fx < 0.04) | (fy < 0.1)
        tone = 0.8 + 0.35 * _hash(col, row, seed)
        out = np.where(is_mortar[:, None], mort, base * tone[:, None])
        if windows:
            wx = (uu % 1.6) / 1.6
            wy = (yy % 2.4) / 2.4
            win = (wx > 0.3) & (wx < 0.7) & (wy > 0.3) & (wy < 0.8) & (yy > 0.9)
            fr = win & ~((wx > 0.33) & (wx < 0.67) & (wy > 0.34) & (wy < 0.76))
            mull = win & (np.abs(wx - 0.5) < 0.012)
            refl = 0.7 + 0.6 * fbm(uu * 2, yy * 2, seed + 1)
            out = np.where(win[:, None], glass * refl[:, None], out)
            out = np.where((fr | mull)[:, None], frame, out)
        return out

    return mat


def paving(seed: int = 41) -> Material:
    c1, c2, joint = srgb("#a39e93"), srgb("#8b8478"), srgb("#5e5850")

    def mat(p, loc, n):
        x, z = p[:, 0] / 0.6, p[:, 2] / 0.4
        row = np.floor(z)
        col = np.floor(x + 0.5 * (row % 2))
        fx, fz = x + 0.5 * (row % 2) - col, z - row
        tone = 0.8 + 0.4 * _hash(col, row, seed)
        pick = (_hash(col, row, seed + 1) > 0.5)[:, None]
        base = np.where(pick, c1, c2) * tone[:, None]
        base = base * (0.85 + 0.3 * fbm(p[:, 0] * 7, p[:, 2] * 7, seed + 2))[:, None]
        j = (np.minimum(fx, 1 - fx) < 0.035) | (np.minimum(fz, 1 - fz) < 0.05)
        return np.where(j[:, None], joint, base)

    return mat


def foliage(seed: int = 51) -> Material:
    c1, c2 = srgb("#2f6b2a"), srgb("#7fae4a")

    def mat(p, loc, n):
        f = fbm(loc[:, 0] * 14 + loc[:, 1] * 5, loc[:, 2] * 14 - loc[:, 1] * 5, seed)
        return c1 + (c2 - c1) * np.clip(f * 1.6 - 0.3, 0, 1)[:, None]

    return mat


def sky_dome(d: np.ndarray) -> np.ndarray:
    up = np.clip(d[:, 1], 0.0, 1.0)
    horizon, zenith = srgb("#cfe3f2"), srgb("#3f7cc4")
    base = horizon + (zenith - horizon) * (up**0.6)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cx, cz = d[:, 0] / np.maximum(d[:, 1], 0.05), d[:, 2] / np.maximum(d[:, 1], 0.05)
    cloud = np.clip((fbm(cx * 1.3, cz * 1.3, 61, 5) - 0.5) * 3.0, 0, 1) * (up > 0.02)
    return (base * (1 - cloud[:, None]) + srgb("#ffffff") * cloud[:, None]) * 1.25


# --------------------------------------------------------------------------------------
# The scenes
# --------------------------------------------------------------------------------------


def room_scene() -> Scene:
    w, h, dep = 3.0, 2.8, 3.5
    walls_back = painted_wall("#c46a4b", 2, frames=[(2, -1.6, -0.2, 1.0, 1.9, 3), (2, 0.6, 1.5, 1.2, 1.8, 4)])
    walls_left = painted_wall("#5d7fa3", 5, frames=[(0, -0.5, 1.4, 0.9, 2.0, 6)])
    walls_right = painted_wall("#8fa67e", 7, frames=[(0, 0.2, 1.2, 1.1, 1.9, 8)])
    floor = checker_floor(0.5, "#e8e0cc", "#3b3b3b")
    ceiling = solid("#f4f1ea", 0.03)

    def room_material(p, loc, n):
        out = ceiling(p, loc, n)
        is_floor = n[:, 1] > 0.5
        is_back = n[:, 2] < -0.5
        is_front = n[:, 2] > 0.5
        is_left = n[:, 0] > 0.5
        is_right = n[:, 0] < -0.5
        for mask, mat in (
            (is_floor, floor),
            (is_back | is_front, walls_back),
            (is_left, walls_left),
            (is_right, walls_right),
        ):
            if mask.any():
                out[mask] = mat(p[mask], loc[mask], n[mask])
        return out

    shapes: list[Shape] = [
        Box(room_material, center=(0.0, h / 2, 0.0), half=(w, h / 2, dep), inside=True, casts_shadow=False),
        Box(rug(), center=(0.1, 0.006, 1.1), half=(1.1, 0.006, 0.75), yaw=0.0, casts_shadow=False),
        Box(crate(), center=(-1.4, 0.3, 1.9), half=(0.3, 0.3, 0.3), yaw=0.5),
        Box(crate("#b98a52", 13), center=(-1.35, 0.78, 1.9), half=(0.2, 0.18, 0.2), yaw=0.2),
        Box(wood("#6b4a2f", 14, axis=1), center=(1.9, 0.8, 2.6), half=(0.5, 0.8, 0.3), yaw=-0.3),
        Sphere(solid("#d93b3b", 0.08, 15), specular=0.5, center=(0.4, 0.35, 1.0), radius=0.35),
        Sphere(solid("#f2c14e", 0.08, 16), specular=0.4, center=(-0.5, 0.2, 0.4), radius=0.2),
        Cylinder(solid("#2e86ab", 0.1, 17), specular=0.3, base=(1.2, 0.0, 0.9), radius=0.22, height=0.55),
        Cylinder(wood("#a87b4f", 18, axis=1), base=(-0.1, 0.0, 2.6), radius=0.35, height=0.45),
    ]
    lights = [Light(position=(0.3, 2.6, 0.6), intensity=2.2), Light(position=(-2.0, 2.4, -2.5), intensity=0.7)]
    target = (0.0, 0.7, 1.6)
    cams = [
        ((-0.6, 1.55, -2.3), target),
        ((-0.2, 1.6, -2.45), (0.05, 0.72, 1.6)),
        ((0.2, 1.55, -2.4), (0.1, 0.7, 1.6)),
        ((0.6, 1.5, -2.25), (0.15, 0.7, 1.6)),
    ]
    return Scene(
        "room",
        "Living room",
        "A room with a checkerboard floor, painted walls, pictures, boxes and balls; the camera slides sideways.",
        shapes,
        lights,
        0.28,
        cams,
        hfov_deg=66.0,
    )


def tabletop_scene() -> Scene:
    table_h = 0.75
    top = Box(wood("#8a5a34", 24, scale=1.0), center=(0.0, table_h - 0.025, 0.0), half=(0.8, 0.025, 0.5))
    legs = [
        Cylinder(solid("#3b2a1c", 0.05, 25), base=(sx * 0.7, 0.0, sz * 0.42), radius=0.035, height=table_h - 0.05)
        for sx in (-1, 1)
        for sz in (-1, 1)
    ]
    floor = checker_floor(0.4, "#b9b2a3", "#6f6a60", seed=26)
    wall = painted_wall("#d9d2c0", 27, frames=[(2, -0.9, 0.6, 1.0, 1.6, 28), (0, -0.9, 0.3, 1.0, 1.8, 29)])

    def room_material(p, loc, n):
        out = wall(p, loc, n)
        is_floor = n[:, 1] > 0.5
        if is_floor.any():
            out[is_floor] = floor(p[is_floor], loc[is_floor], n[is_floor])
        return out

    y = table_h
    book = Box(_book_material(), center=(0.35, y + 0.03, 0.18), half=(0.16, 0.03, 0.11), yaw=0.35)
    shapes: list[Shape] = [
        Box(room_material, center=(0.0, 1.4, 0.5), half=(2.5, 1.4, 2.5), inside=True, casts_shadow=False),
        top,
        *legs,
        book,
        Sphere(solid("#c0392b", 0.05, 31), specular=0.6, center=(-0.3, y + 0.12, 0.05), radius=0.12),
        Sphere(solid("#2874a6", 0.05, 32), specular=0.6, center=(0.05, y + 0.07, -0.2), radius=0.07),
        Box(crate("#e3b23c", 33), center=(-0.45, y + 0.09, -0.25), half=(0.09, 0.09, 0.09), yaw=0.6),
        Box(solid("#7d3c98", 0.08, 34), center=(0.5, y + 0.16, -0.2), half=(0.06, 0.16, 0.06), yaw=-0.2),
        Cylinder(solid("#27ae60", 0.06, 35), specular=0.4, base=(0.05, y, 0.25), radius=0.06, height=0.14),
        Cylinder(solid("#ecf0f1", 0.03, 36), specular=0.5, base=(-0.1, y, -0.02), radius=0.045, height=0.2),
    ]
    lights = [Light(position=(0.6, 2.4, -0.8), intensity=1.9), Light(position=(-1.5, 2.0, 1.0), intensity=0.6)]
    target = (0.0, y + 0.05, 0.0)
    cams = []
    for az in (-32.0, -12.0, 8.0, 28.0):
        a = np.radians(az)
        eye = (1.6 * np.sin(a), 1.5, -1.6 * np.cos(a))
        cams.append(((round(eye[0], 4), eye[1], round(eye[2], 4)), target))
    return Scene(
        "tabletop",
        "Tabletop",
        "A wooden table with balls, boxes, cups and a book, seen from four viewpoints on an arc.",
        shapes,
        lights,
        0.3,
        cams,
        hfov_deg=55.0,
    )


def _book_material() -> Material:
    cover, pages, title = srgb("#1f4e79"), srgb("#f3efe2"), srgb("#f2c14e")

    def mat(p, loc, n):
        top = n[:, 1] > 0.5
        out = np.where(top[:, None], cover, pages)
        band = top & (np.abs(loc[:, 2]) < 0.03)
        out = np.where(band[:, None], title, out)
        lines = (~top) & (np.floor(loc[:, 1] * 400) % 2 == 0)
        out = np.where(lines[:, None], pages * 0.8, out)
        return out * (0.92 + 0.16 * fbm(loc[:, 0] * 20, loc[:, 2] * 20, 37))[:, None]

    return mat


def courtyard_scene() -> Scene:
    shapes: list[Shape] = [
        GroundPlane(paving(), height=0.0, casts_shadow=False),
        Box(bricks("#a0522d", seed=71), center=(0.0, 3.0, 14.0), half=(9.0, 3.0, 1.0)),
        Box(bricks("#c9a66b", "#e6dfd2", seed=72), center=(-8.0, 3.0, 6.0), half=(1.0, 3.0, 7.0)),
        Box(bricks("#8c3b2e", seed=73), center=(8.5, 3.5, 6.0), half=(1.0, 3.5, 7.0)),
        Cylinder(solid("#bdb6a8", 0.08, 74), base=(0.0, 0.0, 6.0), radius=1.1, height=0.45),
        Cylinder(
            solid("#3d6e8f", 0.05, 75), specular=0.6, base=(0.0, 0.0, 6.0), radius=0.95, height=0.47, casts_shadow=False
        ),
        Cylinder(solid("#bdb6a8", 0.08, 76), base=(0.0, 0.0, 6.0), radius=0.18, height=1.3),
        Sphere(solid("#d8d2c4", 0.06, 77), center=(0.0, 1.45, 6.0), radius=0.22),
        Sphere(foliage(78), center=(-4.5, 0.9, 8.5), radius=0.9),
        Sphere(foliage(79), center=(4.2, 0.8, 9.5), radius=0.8),
        Cylinder(solid("#7a5c3e", 0.1, 80), base=(-4.5, 0.0, 8.5), radius=0.1, height=0.3),
        Box(wood("#7b5533", 81), center=(3.0, 0.45, 4.0), half=(0.9, 0.04, 0.22), yaw=-0.4),
        Box(solid("#333333", 0.05, 82), center=(3.0, 0.21, 4.0), half=(0.8, 0.21, 0.05), yaw=-0.4),
        Box(crate("#8e6b45", 83), center=(-2.6, 0.35, 3.6), half=(0.35, 0.35, 0.35), yaw=0.3),
    ]
    lights = [Light(direction=(-0.45, 0.8, -0.4), color=(1.0, 0.96, 0.88), intensity=2.2)]
    cams = [
        ((-0.9, 1.6, -3.0), (0.0, 2.3, 8.0)),
        ((-0.3, 1.62, -2.6), (0.2, 2.3, 8.0)),
        ((0.3, 1.6, -2.2), (0.4, 2.3, 8.0)),
        ((0.9, 1.58, -1.8), (0.6, 2.3, 8.0)),
    ]
    return Scene(
        "courtyard",
        "Courtyard",
        "An outdoor courtyard with brick buildings, a fountain, bushes, a bench "
        "and open sky; the camera walks forward.",
        shapes,
        lights,
        0.35,
        cams,
        hfov_deg=70.0,
        sky=sky_dome,
    )


SCENES: dict[str, Callable[[], Scene]] = {"room": room_scene, "tabletop": tabletop_scene, "courtyard": courtyard_scene}


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def build(key: str, out_dir: Path) -> dict:
    """Render one scene into ``out_dir/<key>/``; returns its ``scene.json`` content."""
    scene = SCENES[key]()
    folder = out_dir / key
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    frames = []
    for i, (eye, target) in enumerate(scene.cameras):
        img, rot, tvec, k = render(scene, eye, target)
        name = f"{i:02d}.jpg"
        Image.fromarray(img).save(folder / name, "JPEG", quality=JPEG_QUALITY, optimize=True)
        ext = np.concatenate([rot, tvec[:, None]], axis=1)
        frames.append(
            {
                "file": name,
                "extrinsics": np.round(ext, 8).tolist(),
                "intrinsics": np.round(k, 6).tolist(),
                "camera_center": np.round(np.asarray(eye, np.float64), 6).tolist(),
                "look_at": list(target),
            }
        )
    meta = {
        "title": scene.title,
        "description": scene.description,
        "synthetic": True,
        "generator": "scripts/make_examples.py",
        "width": WIDTH,
        "height": HEIGHT,
        "units": "metres",
        "world": "y up",
        "convention": "OpenCV camera (x right, y down, z forward); extrinsics are world-to-camera [R|t] "
        "(3x4); intrinsics K (3x3) in pixels of these images, pixel centres at integer "
        "coordinates",
        "has_sky": scene.sky is not None,
        "frames": frames,
    }
    (folder / "scene.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "examples")
    parser.add_argument("--only", choices=sorted(SCENES), action="append")
    args = parser.parse_args(argv)
    for key in args.only or list(SCENES):
        meta = build(key, args.out)
        size = sum(p.stat().st_size for p in (args.out / key).iterdir())
        print(f"{key}: {len(meta['frames'])} views, {size / 1024:.0f} KiB -> {args.out / key}")


if __name__ == "__main__":
    main()
