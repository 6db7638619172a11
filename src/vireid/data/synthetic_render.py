"""The synthetic generator's picture model: identities, cameras and the rendering of one image.

Every identity is a set of body and garment attributes drawn from pools shared by all
identities (so different people collide on attributes: hard negatives). Garments have an RGB
colour AND an independently drawn infrared response (thermal emissivity / NIR reflectance),
and skin carries a per-identity body heat, so an IR image is not a function of the RGB image:
only shape attributes (sleeve length, trousers/shorts/skirt, hair length, bag, hat, build)
and the garment layout are shared across modalities. Each image draws a viewpoint (front,
back, left, right), a walking phase, scale and position jitter, an optional occluder, the
camera's background and illumination, sensor noise and blur. Drawing is numpy-only: shapes are
anti-aliased through signed-distance coverage. See docs/synthetic.md for the model, what it
leaves out, and the calibration of the default difficulty. The data sets' synthetic layout
writers plan with it and :mod:`vireid.data.synthetic` renders their jobs.

Determinism: every random draw comes from ``numpy.random.SeedSequence`` keyed by
``(seed, kind, pid, cam, index)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from vireid.errors import ConfigError

TAG_POOL, TAG_ID, TAG_CAM, TAG_IMG, TAG_PLAN = 11, 12, 13, 14, 15


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


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *key]))


# ----------------------------------------------------------------------------------------
# attribute pools and identities


def make_pools(seed: int, k: Knobs) -> dict:
    """Shared attribute pools: garment colours, IR levels, skin tones, hair colours."""
    r = seeded_rng(seed, TAG_POOL)
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


def make_identity(seed: int, pid: int, pools: dict, k: Knobs) -> dict:
    """Attributes of one identity.

    A garment's IR level mixes its luminance (weight ``k.ir_colour_corr``) with a level drawn
    independently from the IR pool, so IR is correlated with, but not a function of, colour.
    """
    r = seeded_rng(seed, TAG_ID, pid)
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


def make_camera(seed: int, cam: int, ir: bool) -> dict:
    """Fixed appearance of one camera: background layout, illumination, preferred view."""
    r = seeded_rng(seed, TAG_CAM, cam)
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
