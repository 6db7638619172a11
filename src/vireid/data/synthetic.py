"""Synthetic cross-modality re-id benchmark written in the real SYSU-MM01 / RegDB layouts.

Every identity is a set of body and garment attributes drawn from pools shared by all
identities (so different people collide on attributes: hard negatives). Garments have an RGB
colour AND an independently drawn infrared response (thermal emissivity / NIR reflectance),
and skin carries a per-identity body heat, so an IR image is not a function of the RGB image:
only shape attributes (sleeve length, trousers/shorts/skirt, hair length, bag, hat, build)
and the garment layout are shared across modalities. Each image draws a viewpoint (front,
back, left, right), a walking phase, scale and position jitter, an optional occluder, the
camera's background and illumination, sensor noise and blur. Drawing is numpy-only: shapes are
anti-aliased through signed-distance coverage. See docs/synthetic.md for the model, what it
leaves out, and the calibration of the default difficulty.

Determinism: every random draw comes from ``numpy.random.SeedSequence`` keyed by
``(seed, kind, pid, cam, index)``, so the bytes written are the same for any ``workers``.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from vireid.errors import ConfigError
from vireid.utils.atomic import OutputWriteError, atomic_write_text, describe_os_error

log = logging.getLogger(__name__)

LAYOUTS = ("sysu", "regdb", "llcm")
_TAG_POOL, _TAG_ID, _TAG_CAM, _TAG_IMG, _TAG_PLAN = 11, 12, 13, 14, 15
SYSU_RGB_CAMS = (1, 2, 4, 5)
SYSU_IR_CAMS = (3, 6)
# IR cameras whose JPEGs are written as 1-channel (mode L); the others as 3 equal channels.
SYSU_IR_GRAYSCALE_FILE_CAMS = (6,)
# LLCM: 9 visible cameras, 8 near-infrared ones (no NIR cam3), as the DEEN test code lists them.
LLCM_VIS_CAMS = tuple(range(1, 10))
LLCM_NIR_CAMS = (1, 2, 4, 5, 6, 7, 8, 9)
_LLCM_NIR_KEY = 100  # camera-appearance key offset of NIR cameras (vis cam k: k, nir: 100+k)


@dataclass(frozen=True)
class Knobs:
    """Difficulty knobs of the generator (see :func:`knobs_for`)."""

    colour_pool: int = 10          # garment colours shared by all ids
    ir_pool: int = 5               # IR response levels shared by all ids
    build_pool: int = 3            # body width / height classes
    occlusion_p: float = 0.3       # probability of an occluding box per image
    noise_rgb: float = 0.03        # Gaussian sensor noise (std, intensities in [0, 1])
    noise_ir: float = 0.05
    blur_max: float = 1.0          # max Gaussian blur radius (px at output size)
    scale_jitter: float = 0.12     # relative person-height jitter
    shift_jitter: float = 0.08     # relative horizontal position jitter
    illum_jitter: float = 0.25     # per-image brightness jitter (relative)
    ir_agc_jitter: float = 0.15    # per-image IR gain/offset jitter
    ir_colour_corr: float = 0.8    # weight of garment luminance in its IR level (0: independent)
    shape_var: float = 1.0         # spread of per-identity continuous body/garment proportions


def knobs_for(difficulty: float) -> Knobs:
    """Knobs of a scalar difficulty: 0 is easy, 1 the calibrated default, up to ~2 harder.

    Pools shrink (more attribute collisions) and noise, occlusion and jitter grow with it.
    """
    d = float(difficulty)
    if not 0.0 <= d <= 3.0:
        raise ConfigError(f"synthetic difficulty must be in [0, 3], got {difficulty}")
    return Knobs(
        colour_pool=max(3, int(round(16 - 6 * d))),
        ir_pool=max(2, int(round(8 - 3 * d))),
        build_pool=3,
        occlusion_p=min(0.8, 0.3 * d),
        noise_rgb=0.01 + 0.02 * d,
        noise_ir=0.015 + 0.035 * d,
        blur_max=0.3 + 0.7 * d,
        scale_jitter=0.04 + 0.08 * d,
        shift_jitter=0.02 + 0.06 * d,
        illum_jitter=0.08 + 0.17 * d,
        ir_agc_jitter=0.05 + 0.10 * d,
        ir_colour_corr=min(0.95, max(0.0, 1.1 - 0.3 * d)),
        shape_var=max(0.3, 1.5 - 0.5 * d),
    )


DEFAULT_DIFFICULTY = 1.0


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *key]))


# ----------------------------------------------------------------------------------------
# attribute pools and identities


def _pools(seed: int, k: Knobs) -> dict:
    """Shared attribute pools: garment colours, IR levels, skin tones, hair colours."""
    r = _rng(seed, _TAG_POOL)
    # Garment colours: spread hues plus some greys, so dark/neutral clothes collide often.
    hues = r.permutation(k.colour_pool)
    colours = []
    for i, h in enumerate(hues):
        if i % 4 == 3:
            g = r.uniform(0.1, 0.85)
            colours.append(np.array([g, g, g]))
        else:
            colours.append(_hsv(h / k.colour_pool + r.uniform(-0.03, 0.03),
                                r.uniform(0.35, 0.9), r.uniform(0.3, 0.9)))
    ir_levels = np.linspace(0.15, 0.85, k.ir_pool) + r.uniform(-0.03, 0.03, k.ir_pool)
    skins = [np.array(c) for c in ([0.93, 0.78, 0.66], [0.80, 0.62, 0.48],
                                   [0.62, 0.45, 0.33], [0.42, 0.30, 0.22])]
    hairs = [np.array(c) for c in ([0.06, 0.05, 0.05], [0.30, 0.20, 0.12], [0.75, 0.62, 0.35],
                                   [0.55, 0.55, 0.55], [0.45, 0.18, 0.08])]
    return {"colours": colours, "ir": ir_levels, "skins": skins, "hairs": hairs,
            "builds": np.linspace(0.88, 1.12, k.build_pool),
            "heights": np.linspace(0.9, 1.0, k.build_pool)}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 1.0) * 6.0
    i = int(h) % 6
    f = h - int(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _identity(seed: int, pid: int, pools: dict, k: Knobs) -> dict:
    """Attributes of one identity.

    A garment's IR level mixes its luminance (weight ``k.ir_colour_corr``) with a level drawn
    independently from the IR pool, so IR is correlated with, but not a function of, colour.
    """
    r = _rng(seed, _TAG_ID, pid)
    nc, ni = len(pools["colours"]), len(pools["ir"])
    wc = float(k.ir_colour_corr)

    def garment() -> tuple[np.ndarray, float]:
        col = pools["colours"][r.integers(nc)]
        lum = float(col @ np.array([0.299, 0.587, 0.114]))
        return col, (1.0 - wc) * float(pools["ir"][r.integers(ni)]) + wc * lum

    upper, upper_ir = garment()
    upper2, upper2_ir = garment()
    lower, lower_ir = garment()
    shoe, shoe_ir = garment()
    bag, bag_ir = garment()
    hat, hat_ir = garment()
    return {
        "female": bool(r.random() < 0.45),
        "build": float(pools["builds"][r.integers(len(pools["builds"]))]),
        "height": float(pools["heights"][r.integers(len(pools["heights"]))]),
        "skin": pools["skins"][r.integers(len(pools["skins"]))],
        "hair": pools["hairs"][r.integers(len(pools["hairs"]))],
        "hair_long": bool(r.random() < 0.35),
        "heat": float(r.choice([0.8, 0.9, 1.0])),        # skin IR brightness (body heat)
        "hair_ir": float(r.uniform(0.25, 0.45)),
        "upper": upper, "upper_ir": upper_ir,
        "upper2": upper2, "upper2_ir": upper2_ir,
        "pattern": int(r.choice(3, p=[0.55, 0.25, 0.20])),  # plain, stripes, two-tone
        "long_sleeves": bool(r.random() < 0.6),
        "lower": lower, "lower_ir": lower_ir,
        "lower_kind": int(r.choice(3, p=[0.65, 0.2, 0.15])),  # trousers, shorts, skirt
        "shoe": shoe * 0.6, "shoe_ir": shoe_ir * 0.7,
        "bag_kind": int(r.choice(4, p=[0.4, 0.3, 0.2, 0.1])),  # none, backpack, shoulder, hand
        "bag": bag, "bag_ir": bag_ir * 0.8,
        "hat": bool(r.random() < 0.15), "hat_c": hat, "hat_ir": hat_ir,
        # continuous proportions, shared by both modalities (the cross-modality cues)
        "shoulder": 1.0 + 0.12 * k.shape_var * r.uniform(-1, 1),
        "leg": 1.0 + 0.06 * k.shape_var * r.uniform(-1, 1),
        "head": 1.0 + 0.12 * k.shape_var * r.uniform(-1, 1),
        "stripe": 0.07 * (1.0 + 0.35 * k.shape_var * r.uniform(-1, 1)),
        "cut": 0.4 + 0.15 * k.shape_var * r.uniform(-1, 1),
        "bag_size": 1.0 + 0.25 * k.shape_var * r.uniform(-1, 1),
    }


def _camera(seed: int, cam: int, ir: bool) -> dict:
    """Fixed appearance of one camera: background layout, illumination, preferred view."""
    r = _rng(seed, _TAG_CAM, cam)
    n_struct = int(r.integers(2, 6))
    return {
        "ir": ir,
        "wall": r.uniform(0.15, 0.7, 3) if not ir else np.full(3, r.uniform(0.05, 0.3)),
        "floor": r.uniform(0.1, 0.6, 3) if not ir else np.full(3, r.uniform(0.1, 0.35)),
        "horizon": float(r.uniform(0.6, 0.85)),
        "structs": [(float(r.uniform(-0.2, 1.0)), float(r.uniform(0.05, 0.35)),
                     float(r.uniform(0.0, 0.6)),
                     r.uniform(0.0, 0.9, 3) if not ir else np.full(3, r.uniform(0.0, 0.6)))
                    for _ in range(n_struct)],
        "gain": r.uniform(0.75, 1.15, 3) if not ir else np.ones(3) * r.uniform(0.8, 1.2),
        "offset": float(r.uniform(-0.05, 0.08)),
        "view_p": r.dirichlet(np.full(4, 2.0)),
    }


# ----------------------------------------------------------------------------------------
# rasteriser


class _Canvas:
    """Float canvas (H, W, 3) with anti-aliased signed-distance primitives."""

    def __init__(self, h: int, w: int, fill: np.ndarray):
        self.h, self.w = h, w
        self.img = np.empty((h, w, 3), np.float32)
        self.img[:] = fill
        self.ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
        self.xs = np.arange(w, dtype=np.float32)[None, :] + 0.5

    def _box(self, x0: float, y0: float, x1: float, y1: float):
        a = max(0, int(math.floor(min(x0, x1))) - 1)
        b = min(self.w, int(math.ceil(max(x0, x1))) + 2)
        c = max(0, int(math.floor(min(y0, y1))) - 1)
        d = min(self.h, int(math.ceil(max(y0, y1))) + 2)
        if a >= b or c >= d:
            return None
        return c, d, a, b

    def _paint(self, sl, cov: np.ndarray, colour) -> np.ndarray:
        c, d, a, b = sl
        region = self.img[c:d, a:b]
        cov = cov[:, :, None]
        region *= 1.0 - cov
        region += cov * np.asarray(colour, np.float32)
        return cov[:, :, 0]

    def ellipse(self, cx, cy, rx, ry, colour, angle=0.0):
        r = max(rx, ry)
        sl = self._box(cx - r, cy - r, cx + r, cy + r)
        if sl is None:
            return
        c, d, a, b = sl
        dx, dy = self.xs[:, a:b] - cx, self.ys[c:d] - cy
        if angle:
            ca, sa = math.cos(angle), math.sin(angle)
            dx, dy = ca * dx + sa * dy, -sa * dx + ca * dy
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        q = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) + 1e-6
        g = np.sqrt((dx / rx ** 2) ** 2 + (dy / ry ** 2) ** 2) / q + 1e-6
        cov = np.clip(0.5 - (q - 1.0) / g, 0.0, 1.0)
        self._paint(sl, cov, colour)

    def capsule(self, x0, y0, x1, y1, rad, colour):
        sl = self._box(min(x0, x1) - rad, min(y0, y1) - rad, max(x0, x1) + rad, max(y0, y1) + rad)
        if sl is None:
            return
        c, d, a, b = sl
        px, py = self.xs[:, a:b] - x0, self.ys[c:d] - y0
        vx, vy = x1 - x0, y1 - y0
        t = np.clip((px * vx + py * vy) / max(vx * vx + vy * vy, 1e-6), 0.0, 1.0)
        dist = np.sqrt((px - t * vx) ** 2 + (py - t * vy) ** 2) - rad
        self._paint(sl, np.clip(0.5 - dist, 0.0, 1.0), colour)

    def rbox(self, x0, y0, x1, y1, rad, colour, stripes=None):
        """Rounded rectangle; ``stripes=(period, colour2)`` paints horizontal bands,
        ``stripes=(None, colour2)`` paints the right half (two-tone)."""
        sl = self._box(x0, y0, x1, y1)
        if sl is None:
            return
        c, d, a, b = sl
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        hx, hy = abs(x1 - x0) / 2, abs(y1 - y0) / 2
        rad = min(rad, hx, hy)
        qx = np.abs(self.xs[:, a:b] - cx) - hx + rad
        qy = np.abs(self.ys[c:d] - cy) - hy + rad
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        dist = outside + np.minimum(np.maximum(qx, qy), 0) - rad
        cov = np.clip(0.5 - dist, 0.0, 1.0)
        if stripes is None:
            self._paint(sl, cov, colour)
            return
        period, colour2 = stripes
        if period is None:
            sel = np.clip(self.xs[:, a:b] - cx + 0.5, 0, 1) * np.ones_like(cov)
        else:
            sel = (np.sin(2 * np.pi * (self.ys[c:d] - y0) / period) > 0).astype(np.float32)
            sel = sel * np.ones_like(cov)
        col = (np.asarray(colour, np.float32)[None, None] * (1 - sel[:, :, None])
               + np.asarray(colour2, np.float32)[None, None] * sel[:, :, None])
        region = self.img[c:d, a:b]
        region *= 1.0 - cov[:, :, None]
        region += cov[:, :, None] * col


# ----------------------------------------------------------------------------------------
# one image


def _part_values(ident: dict, ir: bool) -> dict:
    """Colour of every part: RGB triples, or the IR response replicated to 3 channels."""
    if not ir:
        return {"skin": ident["skin"], "hair": ident["hair"], "upper": ident["upper"],
                "upper2": ident["upper2"], "lower": ident["lower"], "shoe": ident["shoe"],
                "bag": ident["bag"], "hat": ident["hat_c"]}
    g = {"skin": ident["heat"], "hair": ident["hair_ir"], "upper": ident["upper_ir"],
         "upper2": ident["upper2_ir"], "lower": ident["lower_ir"], "shoe": ident["shoe_ir"],
         "bag": ident["bag_ir"], "hat": ident["hat_ir"]}
    return {k: np.full(3, v) for k, v in g.items()}


def render(ident: dict, cam: dict, size: tuple[int, int], k: Knobs,
           r: np.random.Generator) -> np.ndarray:
    """Render one image. Returns ``(H, W, 3) uint8`` (IR: three equal channels)."""
    h, w = size
    ir = cam["ir"]
    # --- background: wall, floor, a few structures, shifted per image (crops move).
    cv = _Canvas(h, w, cam["wall"])
    hz = cam["horizon"] * h + r.uniform(-0.05, 0.05) * h
    cv.rbox(-2, hz, w + 2, h + 4, 0, cam["floor"])
    shift = r.uniform(-0.3, 0.3)
    for (sx, sw, sy, scol) in cam["structs"]:
        x0 = (sx + shift) * w
        cv.rbox(x0, sy * h, x0 + sw * w, hz, 0, scol)
    # --- person geometry
    v = _part_values(ident, ir)
    ph = h * ident["height"] * (0.86 + r.uniform(-k.scale_jitter, k.scale_jitter) * 0.8)
    ph = min(ph, h * 0.99)
    feet = h - r.uniform(0.0, 0.06) * h
    feet = max(feet, ph * 1.0)
    cx = w / 2 + r.uniform(-k.shift_jitter, k.shift_jitter) * w
    bw = ident["build"] * (0.92 if ident["female"] else 1.0)
    view = int(r.choice(4, p=cam["view_p"]))          # 0 front, 1 back, 2 left, 3 right
    side = view >= 2
    face = -1.0 if view == 2 else 1.0                  # facing direction in side views
    phase = r.uniform(0, 2 * np.pi)
    swing = math.sin(phase) * r.uniform(0.15, 0.45)
    u = ph                                             # unit: person height
    leg_len = 0.47 * ident["leg"]
    y_sh, y_hip = feet - 0.81 * u, feet - (leg_len + 0.02) * u
    torso_hw = (0.085 if side else 0.135 * ident["shoulder"]) * u * bw
    limb_r = 0.038 * u * bw
    leg_r = 0.047 * u * bw
    legs = []
    for sgn in (-1, 1):
        hx = cx + (0.0 if side else sgn * 0.055 * u * bw)
        ang = sgn * swing if side else sgn * 0.05
        fx = hx + (math.sin(ang) * leg_len * u * (face if side else 1.0))
        fy = y_hip + math.cos(ang) * leg_len * u
        legs.append((hx, y_hip, fx, fy))
    arms = []
    for sgn in (-1, 1):
        sx = cx + (sgn * 0.02 * u if side else sgn * (torso_hw + 0.2 * limb_r))
        ang = -sgn * swing if side else sgn * 0.12
        ex = sx + math.sin(ang) * 0.36 * u * (face if side else 1.0)
        ey = y_sh + 0.02 * u + math.cos(ang) * 0.36 * u
        arms.append((sx, y_sh + 0.02 * u, ex, ey))

    def draw_leg(leg):
        x0, y0, x1, y1 = leg
        kind = ident["lower_kind"]
        if kind == 0:
            cv.capsule(x0, y0, x1, y1, leg_r, v["lower"])
        else:
            cv.capsule(x0, y0, x1, y1, leg_r * 0.85, v["skin"])
            if kind == 1:
                t = ident["cut"]
                cv.capsule(x0, y0, x0 + t * (x1 - x0), y0 + t * (y1 - y0), leg_r * 1.05,
                           v["lower"])
        sl = 0.07 * u * (1.0 if side else 0.6)
        cv.ellipse(x1 + (face * sl * 0.4 if side else 0), y1 - 0.01 * u, sl, 0.028 * u, v["shoe"])

    def draw_arm(arm):
        x0, y0, x1, y1 = arm
        if ident["long_sleeves"]:
            cv.capsule(x0, y0, x1, y1, limb_r, v["upper"])
        else:
            cv.capsule(x0, y0, x1, y1, limb_r * 0.85, v["skin"])
            t = ident["cut"]
            cv.capsule(x0, y0, x0 + t * (x1 - x0), y0 + t * (y1 - y0), limb_r * 1.05,
                       v["upper"])
        cv.ellipse(x1, y1, limb_r * 0.9, limb_r * 1.1, v["skin"])

    # far limbs first in side views
    if side:
        draw_arm(arms[0])
    if ident["bag_kind"] == 1 and view == 0:
        pass  # backpack hidden behind the torso, straps drawn later
    draw_leg(legs[0])
    draw_leg(legs[1])
    if ident["lower_kind"] == 2:  # skirt
        cv.ellipse(cx, y_hip + 0.08 * u, torso_hw * 1.15, 0.14 * u, v["lower"])
    # torso (upper garment with its pattern)
    pat = ident["pattern"]
    stripes = None if pat == 0 else ((ident["stripe"] * u, v["upper2"]) if pat == 1 else (None, v["upper2"]))
    cv.rbox(cx - torso_hw, y_sh - 0.02 * u, cx + torso_hw, y_hip + 0.03 * u, 0.05 * u * bw,
            v["upper"], stripes=stripes)
    if ident["lower_kind"] != 2:
        cv.rbox(cx - torso_hw * 0.95, y_hip - 0.02 * u, cx + torso_hw * 0.95, y_hip + 0.06 * u,
                0.02 * u, v["lower"])
    # bags
    bk = ident["bag_kind"]
    if bk == 1:
        if view == 1:
            bs = ident["bag_size"]
            cv.rbox(cx - torso_hw * 0.75 * bs, y_sh + 0.03 * u, cx + torso_hw * 0.75 * bs,
                    y_sh + 0.24 * u * bs, 0.03 * u, v["bag"])
        elif side:
            bx = cx - face * torso_hw
            cv.rbox(bx - face * 0.09 * u, y_sh + 0.03 * u, bx, y_sh + 0.24 * u, 0.03 * u, v["bag"])
        else:
            for sgn in (-1, 1):
                cv.capsule(cx + sgn * torso_hw * 0.55, y_sh, cx + sgn * torso_hw * 0.5,
                           y_sh + 0.15 * u, 0.012 * u, v["bag"])
    elif bk == 2:
        cv.capsule(cx - torso_hw * 0.8, y_sh, cx + torso_hw * 0.9, y_hip - 0.02 * u, 0.012 * u,
                   v["bag"])
        cv.rbox(cx + torso_hw * 0.6, y_hip - 0.08 * u, cx + torso_hw * 1.5, y_hip + 0.05 * u,
                0.02 * u, v["bag"])
    if side:
        draw_arm(arms[1])
    else:
        draw_arm(arms[0])
        draw_arm(arms[1])
    if bk == 3:
        x1, y1 = arms[1][2], arms[1][3]
        cv.rbox(x1 - 0.05 * u, y1, x1 + 0.05 * u, y1 + 0.11 * u, 0.02 * u, v["bag"])
    # head, hair, hat
    hcx = cx + (face * 0.015 * u if side else 0.0)
    hcy = feet - 0.90 * u
    hrx, hry = 0.05 * u * ident["head"], 0.063 * u * ident["head"]
    cv.capsule(cx, y_sh - 0.03 * u, cx, hcy, 0.025 * u, v["skin"])
    if ident["hair_long"] and view != 0:
        cv.rbox(hcx - hrx * 1.05 - (face * 0.02 * u if side else 0), hcy,
                hcx + hrx * 1.05 - (face * 0.02 * u if side else 0), hcy + 0.16 * u,
                0.03 * u, v["hair"])
    cv.ellipse(hcx, hcy, hrx, hry, v["skin"] if view != 1 else v["hair"])
    cv.ellipse(hcx - (face * 0.012 * u if side else 0), hcy - 0.025 * u, hrx * 1.02, hry * 0.65,
               v["hair"])
    if ident["hair_long"] and view == 0:
        for sgn in (-1, 1):
            cv.capsule(hcx + sgn * hrx * 0.95, hcy, hcx + sgn * hrx * 0.95, hcy + 0.12 * u,
                       0.018 * u, v["hair"])
    if ident["hat"]:
        cv.ellipse(hcx, hcy - 0.04 * u, hrx * 1.1, hry * 0.55, v["hat"])
        if side:
            cv.ellipse(hcx + face * 0.05 * u, hcy - 0.025 * u, 0.04 * u, 0.01 * u, v["hat"])
    # occluder (another person's shoulder, a pillar, a desk...)
    if r.random() < k.occlusion_p:
        col = r.uniform(0.05, 0.9, 3) if not ir else np.full(3, r.uniform(0.05, 0.9))
        where = int(r.integers(3))
        frac = r.uniform(0.15, 0.4)
        if where == 0:
            cv.rbox(-2, h * (1 - frac), w + 2, h + 2, 0, col)
        elif where == 1:
            cv.rbox(-2, r.uniform(0, 0.5) * h, frac * w * 1.4, h + 2, 0.05 * w, col)
        else:
            cv.rbox(w * (1 - frac * 1.4), r.uniform(0, 0.5) * h, w + 2, h + 2, 0.05 * w, col)
    img = cv.img
    # --- illumination / sensor response
    bright = 1.0 + r.uniform(-k.illum_jitter, k.illum_jitter)
    shade = (1.0 - 0.18 * (cv.ys / h - 0.3))[:, :, None]   # light from the ceiling
    if not ir:
        cast = cam["gain"] * (1.0 + r.uniform(-0.05, 0.05, 3))
        img = img * shade * (bright * cast)[None, None] + cam["offset"]
        noise = r.normal(0.0, k.noise_rgb, (h, w, 3)).astype(np.float32)
    else:
        gain = cam["gain"][0] * (1.0 + r.uniform(-k.ir_agc_jitter, k.ir_agc_jitter))
        off = cam["offset"] + r.uniform(-k.ir_agc_jitter, k.ir_agc_jitter) * 0.5
        vign = 1.0 - 0.25 * (((cv.xs / w) - 0.5) ** 2 + ((cv.ys / h) - 0.5) ** 2)
        img = img[:, :, :1] * (gain * bright * vign)[:, :, None] + off
        noise = r.normal(0.0, k.noise_ir, (h, w, 1)).astype(np.float32)
    out = np.clip((img + noise) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if ir:
        out = np.repeat(out, 3, axis=2)
    radius = float(r.uniform(0.0, k.blur_max)) * (w / 64.0)
    if radius > 0.05:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(radius)))
    return out


# ----------------------------------------------------------------------------------------
# layouts


@dataclass(frozen=True)
class _Job:
    """Everything needed to render and write one identity's images."""

    seed: int
    pid: int
    out: str
    images: tuple  # ((relpath, cam_key, is_ir, (h, w), index, fmt), ...)


def _save(arr: np.ndarray, path: Path, fmt: str, gray: bool) -> None:
    img = Image.fromarray(arr[:, :, 0] if gray else arr, mode="L" if gray else "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique temp name in the final folder, then an atomic rename.
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    if fmt == "jpg":
        img.save(tmp, format="JPEG", quality=90)
    else:
        img.save(tmp, format="BMP")
    os.replace(tmp, path)


_WORKER_STATE: dict = {}


def _init_worker(seed: int, knobs: Knobs, cams: dict) -> None:
    _WORKER_STATE.update(seed=seed, knobs=knobs, cams=cams, pools=_pools(seed, knobs))


def _run_job(job: _Job) -> int:
    st = _WORKER_STATE
    ident = _identity(job.seed, job.pid, st["pools"], st["knobs"])
    for rel, cam_key, gray_file, size, index, fmt in job.images:
        cam = st["cams"][cam_key]
        r = _rng(job.seed, _TAG_IMG, job.pid, cam_key, index)
        arr = render(ident, cam, size, st["knobs"], r)
        _save(arr, Path(job.out) / rel, fmt, gray_file)
    return len(job.images)


def _size(r: np.random.Generator, h: int, w: int, jitter: float) -> tuple[int, int]:
    s = 1.0 + r.uniform(-jitter, jitter)
    a = 1.0 + r.uniform(-0.08, 0.08)
    return max(16, int(round(h * s))), max(8, int(round(w * s * a)))


def _plan_sysu(seed: int, ids: int, imgs: tuple[int, int], rgb_hw, ir_hw):
    """Split ids and decide which cameras and how many images each id has."""
    r = _rng(seed, _TAG_PLAN, 1)
    pids = np.arange(1, ids + 1)
    order = r.permutation(pids)
    n_unlisted = max(1, int(round(0.05 * ids)))
    listed = order[n_unlisted:]
    n = len(listed)
    # SYSU-MM01 proportions: 296 train, 99 val, 96 test of 491 listed ids.
    n_test = max(1, int(round(n * 96 / 491)))
    n_val = max(1, int(round(n * 99 / 491)))
    if n - n_test - n_val < 1:
        raise ConfigError(f"synthetic SYSU layout needs at least 4 ids, got {ids}")
    test, val, train = (sorted(int(x) for x in listed[:n_test]),
                        sorted(int(x) for x in listed[n_test:n_test + n_val]),
                        sorted(int(x) for x in listed[n_test + n_val:]))
    train_set = set(train)
    plan = {}
    for pid in pids.tolist():
        rp = _rng(seed, _TAG_PLAN, 2, pid)
        rgb = [c for c in SYSU_RGB_CAMS if rp.random() < 0.75]
        irc = [c for c in SYSU_IR_CAMS if rp.random() < 0.8]
        if not rgb:
            rgb = [int(rp.choice(SYSU_RGB_CAMS))]
        if not irc:
            irc = [int(rp.choice(SYSU_IR_CAMS))]
        # A few training ids are seen by one modality only, as in the real data.
        if pid in train_set and rp.random() < 0.03:
            if rp.random() < 0.5:
                rgb = []
            else:
                irc = []
        cams = {}
        for c in sorted(rgb + irc):
            base = ir_hw if c in SYSU_IR_CAMS else rgb_hw
            cams[c] = [_size(rp, base[0], base[1], 0.15)
                       for _ in range(int(rp.integers(imgs[0], imgs[1] + 1)))]
        plan[pid] = cams
    return train, val, test, plan


def _plan_llcm(seed: int, ids: int, imgs: tuple[int, int], rgb_hw, ir_hw, out: Path):
    """LLCM layout (as the DEEN code reads it): jobs and index files.

    ``vis/PPPP/`` and ``nir/PPPP/`` hold training images listed in ``idx/train_vis.txt`` /
    ``idx/train_nir.txt`` (``<relative path> <label>``, labels 0..K-1 by increasing id);
    ``test_vis/camK/PPPP/`` and ``test_nir/camK/PPPP/`` the test images of the ids of
    ``idx/test_id.txt`` (also listed in ``idx/test_vis.txt`` / ``idx/test_nir.txt`` as
    ``<relative path> <pid>``). File names ``PPPP_cKK_sSSSSSS_fFFFF_{vis,nir}.jpg``. About a
    third of the ids are test ids (LLCM: 351 of 1064).
    """
    r = _rng(seed, _TAG_PLAN, 5)
    pids = [int(p) for p in r.permutation(np.arange(1, ids + 1))]
    n_test = max(1, int(round(ids * 351 / 1064)))
    if ids - n_test < 2:
        n_test = ids - 2
    test, train = sorted(pids[:n_test]), sorted(pids[n_test:])
    label = {p: i for i, p in enumerate(train)}
    jobs, lists = [], {k: [] for k in ("train_vis", "train_nir", "test_vis", "test_nir")}
    for pid in range(1, ids + 1):
        rp = _rng(seed, _TAG_PLAN, 6, pid)
        vis = [c for c in LLCM_VIS_CAMS if rp.random() < 0.4] or [int(rp.choice(LLCM_VIS_CAMS))]
        nir = [c for c in LLCM_NIR_CAMS if rp.random() < 0.4] or [int(rp.choice(LLCM_NIR_CAMS))]
        items, index = [], 0
        for mod, cam_list, hw in (("vis", vis, rgb_hw), ("nir", nir, ir_hw)):
            for c in cam_list:
                for _ in range(int(rp.integers(imgs[0], imgs[1] + 1))):
                    scene, frame = int(rp.integers(100000, 240000)), int(rp.integers(0, 10000))
                    name = f"{pid:04d}_c{c:02d}_s{scene:06d}_f{frame:04d}_{mod}.jpg"
                    if pid in label:
                        rel = f"{mod}/{pid:04d}/{name}"
                        lists[f"train_{mod}"].append(f"{rel} {label[pid]}")
                    else:
                        rel = f"test_{mod}/cam{c}/{pid:04d}/{name}"
                        lists[f"test_{mod}"].append(f"{rel} {pid}")
                    key = c if mod == "vis" else _LLCM_NIR_KEY + c
                    items.append((rel, key, False, _size(rp, hw[0], hw[1], 0.15), index, "jpg"))
                    index += 1
        jobs.append(_Job(seed, pid, str(out), tuple(items)))
    for name, lines in lists.items():
        atomic_write_text(out / "idx" / f"{name}.txt", "\n".join(sorted(lines)) + "\n")
    atomic_write_text(out / "idx" / "test_id.txt", ",".join(str(p) for p in test) + "\n")
    for d in ("test_vis", "test_nir"):
        (out / d).mkdir(exist_ok=True)
    return jobs, {"train_ids": len(train), "test_ids": len(test)}


#: Written into every synthetic dataset folder: the parameters it was generated with.
CLAIM_FILE = ".vireid-synth.json"


def _claim_output(out: Path, params: dict) -> None:
    """Make ``out`` ready for a dataset of ``params``, or refuse it.

    A folder that is empty, missing, or holds a synthetic dataset of the *same* parameters
    (a re-run gives the same bytes, and completes a run that was cut short) is accepted.
    A file, a folder with other content, or a synthetic dataset of other parameters (other
    seed, size or layout: the two would silently mix) is refused with ConfigError. The
    parameters are recorded (``complete: false``) before the first image is written.
    """

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: expected a folder (or a new name), found a file")
    if out.is_dir() and any(out.iterdir()):
        claim = out / CLAIM_FILE
        try:
            theirs = json.loads(claim.read_text(encoding="utf-8")) if claim.is_file() else None
        except (OSError, ValueError):
            theirs = None
        if not isinstance(theirs, dict):
            found = sorted(p.name for p in out.iterdir())[:6]
            raise ConfigError(f"--out {out}: expected an empty folder (or one written by vireid "
                              f"synth with the same parameters), found other files: {found}")
        diff = [f"{key}={theirs.get(key)!r}" for key in params if theirs.get(key) != params[key]]
        if diff:
            raise ConfigError(
                f"--out {out} holds a synthetic dataset of other parameters "
                f"({', '.join(diff[:4])}); expected the same parameters to re-generate it, "
                f"found " + ", ".join(f"{key}={params[key]!r}" for key in params
                                      if theirs.get(key) != params[key])[:300]
                + "; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot create the dataset folder {out}: "
                               f"{describe_os_error(exc)}") from exc
    atomic_write_text(out / CLAIM_FILE, json.dumps(dict(params, complete=False), indent=1) + "\n")


def generate(layout: str, out: str | os.PathLike, ids: int, seed: int = 0, workers: int = 1,
             difficulty: float = DEFAULT_DIFFICULTY, knobs: Knobs | None = None,
             images_per_camera: tuple[int, int] = (4, 8),
             rgb_size: tuple[int, int] | None = None, ir_size: tuple[int, int] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a synthetic dataset in the real layout of SYSU-MM01, RegDB or LLCM.

    Args:
        layout: ``"sysu"``, ``"regdb"`` or ``"llcm"`` (see :func:`_plan_llcm`).
        out: output folder (created). It must be empty, or hold a synthetic dataset of the
            same parameters (re-generated in place); anything else is refused (ConfigError),
            so that two datasets never mix.
        ids: number of identities (SYSU: id folders, ~5 % of them listed in no split; RegDB:
            identities, split half/half per trial).
        seed: master seed; the output bytes depend only on it and the arguments.
        workers: processes (``> 1`` uses multiprocessing; output identical).
        difficulty: scalar difficulty (:func:`knobs_for`); 1.0 is the calibrated default.
        knobs: explicit knobs, overriding ``difficulty``.
        images_per_camera: SYSU ``(min, max)`` images per id and camera (RegDB: always 10).
        rgb_size, ir_size: base ``(H, W)`` of RGB / IR images (SYSU default (192, 80) and
            (128, 56) with ±15 % per-image jitter; RegDB default (128, 64) and (120, 56) fixed).
        progress: called as ``progress(done_ids, total_ids)``.

    Returns:
        A summary dict (layout, counts, seed, knobs).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"synthetic layout must be one of {LAYOUTS}, got {layout!r}")
    min_ids = {"sysu": 4, "regdb": 2, "llcm": 3}[layout]
    if not isinstance(ids, int) or ids < min_ids:
        raise ConfigError(f"synthetic {layout} layout needs ids >= {min_ids}, got {ids!r}")
    lo, hi = images_per_camera
    if not 1 <= lo <= hi:
        raise ConfigError(f"images_per_camera must be (min, max) with 1 <= min <= max, "
                          f"got {images_per_camera}")
    k = knobs if knobs is not None else knobs_for(difficulty)
    out = Path(out)
    seed = int(seed)
    params = {"layout": layout, "ids": ids, "seed": seed, "knobs": asdict(k),
              "images_per_camera": [lo, hi],
              "rgb_size": list(rgb_size) if rgb_size else None,
              "ir_size": list(ir_size) if ir_size else None}
    _claim_output(out, params)
    if layout == "sysu":
        rgb_hw, ir_hw = rgb_size or (192, 80), ir_size or (128, 56)
        cams = {c: _camera(seed, c, c in SYSU_IR_CAMS) for c in range(1, 7)}
        train, val, test, plan = _plan_sysu(seed, ids, (lo, hi), rgb_hw, ir_hw)
        jobs = []
        for pid, pc in plan.items():
            items = []
            for c, sizes in pc.items():
                for i, hw in enumerate(sizes):
                    items.append((f"cam{c}/{pid:04d}/{i + 1:04d}.jpg", c,
                                  c in SYSU_IR_GRAYSCALE_FILE_CAMS, hw, i, "jpg"))
            jobs.append(_Job(seed, pid, str(out), tuple(items)))
        for c in range(1, 7):
            (out / f"cam{c}").mkdir(exist_ok=True)
        for name, lst in (("train_id.txt", train), ("val_id.txt", val), ("test_id.txt", test)):
            atomic_write_text(out / "exp" / name, ",".join(str(p) for p in lst) + "\n")
        extra = {"train_ids": len(train), "val_ids": len(val), "test_ids": len(test),
                 "unlisted_ids": ids - len(train) - len(val) - len(test)}
    elif layout == "llcm":
        rgb_hw, ir_hw = rgb_size or (192, 80), ir_size or (192, 80)
        cams = {c: _camera(seed, c, False) for c in LLCM_VIS_CAMS}
        cams.update({_LLCM_NIR_KEY + c: _camera(seed, _LLCM_NIR_KEY + c, True)
                     for c in LLCM_NIR_CAMS})
        jobs, extra = _plan_llcm(seed, ids, (lo, hi), rgb_hw, ir_hw, out)
    else:
        rgb_hw, ir_hw = rgb_size or (128, 64), ir_size or (120, 56)
        cams = {1: _camera(seed, 1, False), 2: _camera(seed, 2, True)}
        # RegDB films front and back views only.
        for c in cams.values():
            vp = c["view_p"].copy()
            vp[2:] = 0.0
            c["view_p"] = vp / vp.sum()
        jobs, names = [], {}
        pools = _pools(seed, k)
        for pid in range(1, ids + 1):
            rp = _rng(seed, _TAG_PLAN, 3, pid)
            gender = "female" if _identity(seed, pid, pools, k)["female"] else "male"
            items, nm = [], {"v": [], "t": []}
            for j in range(10):
                serial = (pid - 1) * 10 + j + 1
                view = "front" if rp.random() < 0.5 else "back"
                for mod, cam, folder, hw in (("v", 1, "Visible", rgb_hw),
                                             ("t", 2, "Thermal", ir_hw)):
                    rel = f"{folder}/{pid}/{gender}_{view}_{mod}_{serial:05d}_{pid}.bmp"
                    items.append((rel, cam, cam == 2, tuple(hw), j, "bmp"))
                    nm[mod].append(rel)
            names[pid] = nm
            jobs.append(_Job(seed, pid, str(out), tuple(items)))
        all_ids = list(range(1, ids + 1))
        for t in range(1, 11):
            perm = _rng(seed, _TAG_PLAN, 4, t).permutation(all_ids)
            half = ids // 2
            splits = {"train": sorted(int(x) for x in perm[:half]),
                      "test": sorted(int(x) for x in perm[half:])}
            for split, sids in splits.items():
                for mod, word in (("v", "visible"), ("t", "thermal")):
                    lines = [f"{rel} {label}" for label, pid in enumerate(sids)
                             for rel in names[pid][mod]]
                    atomic_write_text(out / "idx" / f"{split}_{word}_{t}.txt", "\n".join(lines) + "\n")
        extra = {"train_ids_per_trial": ids // 2, "test_ids_per_trial": ids - ids // 2}

    total = sum(len(j.images) for j in jobs)
    log.info("synthesising %d images of %d ids (%s layout) into %s with %d worker(s)",
             total, len(jobs), layout, out, workers)
    done = 0
    if workers > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers, initializer=_init_worker, initargs=(seed, k, cams)) as pool:
            for _ in pool.imap_unordered(_run_job, jobs, chunksize=4):
                done += 1
                if progress is not None:
                    progress(done, len(jobs))
    else:
        _init_worker(seed, k, cams)
        for job in jobs:
            _run_job(job)
            done += 1
            if progress is not None:
                progress(done, len(jobs))
    atomic_write_text(out / CLAIM_FILE, json.dumps(dict(params, complete=True), indent=1) + "\n")
    return {"layout": layout, "out": str(out), "ids": ids, "images": total, "seed": seed,
            "knobs": asdict(k), **extra}


__all__ = ["generate", "Knobs", "knobs_for", "render", "DEFAULT_DIFFICULTY", "LAYOUTS"]
