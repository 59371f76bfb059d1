"""``shapes``: a generated image set that needs no file.

Circles, crosses, squares and triangles (outlines, sometimes filled) at random positions, sizes,
rotations and stroke widths, on grey or coloured backgrounds with a gradient, in a random contrast
polarity, plus Gaussian noise. Position and polarity vary, so no fixed pixel template separates
the classes: a linear classifier on raw pixels does poorly while a small CNN does well.

Drawn with signed distance functions on a numpy coordinate grid, one vectorised pass per class
(no per-image or per-pixel Python loops), anti-aliased by a one-pixel ramp at the edge.
Everything is fixed by ``seed``; the train and test splits use different seeds derived from it.
"""

from __future__ import annotations

import numbers

import numpy as np

from .sources import SHAPES_CLASSES

DEFAULT_N = {"train": 2000, "test": 500}
_SPLIT_CODE = {"train": 0, "test": 1}
OPTIONS = ("n", "size", "channels", "classes", "seed")


def _int_option(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"shapes option {name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"shapes option {name} must be {rng}, got {value}")
    return int(value)


def check_classes(classes) -> list:
    if classes is None:
        return list(SHAPES_CLASSES)
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    classes = list(classes)
    unknown = [c for c in classes if c not in SHAPES_CLASSES]
    if unknown:
        raise ValueError(f"unknown shapes class(es) {unknown}; known: {', '.join(SHAPES_CLASSES)}")
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"shapes classes must be a non-empty list without repeats, got {classes}")
    return classes


# --- signed distances (negative inside), arrays (n, H, W) -----------------------------------

def _box(u, v, hu, hv):
    du, dv = np.abs(u) - hu, np.abs(v) - hv
    outside = np.hypot(np.maximum(du, 0), np.maximum(dv, 0))
    return outside + np.minimum(np.maximum(du, dv), 0)


def _circle(u, v, r, t):
    return np.hypot(u, v) - r


def _square(u, v, r, t):
    a = r / np.sqrt(2)  # r is the half-diagonal, so every shape fits in a circle of radius r
    return _box(u, v, a, a)


def _triangle(u, v, r, t):
    """Equilateral triangle of circumradius r centred on its centroid."""
    k = np.sqrt(3.0)
    h = r * (k / 2)  # half the side
    px = np.abs(u) - h
    py = v + h / k
    fold = px + k * py > 0
    qx = np.where(fold, (px - k * py) / 2, px)
    qy = np.where(fold, (-k * px - py) / 2, py)
    qx = qx - np.clip(qx, -2 * h, 0)
    return -np.hypot(qx, qy) * np.sign(qy)


def _cross(u, v, r, t):
    return np.minimum(_box(u, v, r, t / 2), _box(u, v, t / 2, r))


_SDF = {"circle": _circle, "square": _square, "triangle": _triangle, "cross": _cross}


def _contrast(rng, bg, min_delta):
    """A foreground value at least ``min_delta`` away from ``bg`` (in [0, 1]), either side."""
    up_room, down_room = 1 - bg, bg
    go_up = np.where(up_room < min_delta, False,
                     np.where(down_room < min_delta, True, rng.random(bg.shape) < 0.5))
    room = np.where(go_up, up_room, down_room)
    delta = min_delta + rng.random(bg.shape) * (room - min_delta)
    return np.where(go_up, bg + delta, bg - delta)


def generate(n: int = 2000, size: int = 28, channels: int = 1, classes=None, seed: int = 0,
             split: str = "train"):
    """Images (n, channels, size, size) float32 in [0, 1], balanced labels (n,) int64, classes."""
    n = _int_option("n", n, 1)
    size = _int_option("size", size, 8, 1024)
    channels = _int_option("channels", channels, 1, 3)
    if channels == 2:
        raise ValueError("shapes option channels must be 1 or 3, got 2")
    seed = _int_option("seed", seed, 0)
    classes = check_classes(classes)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODE[split]]))
    f32 = np.float32

    y = rng.permutation(np.arange(n) % len(classes)).astype(np.int64)
    scale = size / 28.0
    r = rng.uniform(0.22, 0.45, n) * size                         # circumradius
    t = np.maximum(rng.uniform(1.2, 3.2, n) * scale, 1.0)          # stroke width
    margin = r + t / 2 + 0.5
    cx = margin + rng.random(n) * np.maximum(size - 1 - 2 * margin, 0)
    cy = margin + rng.random(n) * np.maximum(size - 1 - 2 * margin, 0)
    angle = rng.uniform(0, 2 * np.pi, n)
    filled = rng.random(n) < 0.25

    # coverage of the shape, 0..1, per image
    grid = np.arange(size, dtype=f32)
    cover = np.empty((n, size, size), f32)
    for k, name in enumerate(classes):
        i = np.flatnonzero(y == k)
        if not i.size:
            continue
        c, s = np.cos(angle[i]).astype(f32), np.sin(angle[i]).astype(f32)
        px = grid[None, None, :] - cx[i].astype(f32)[:, None, None]
        py = grid[None, :, None] - cy[i].astype(f32)[:, None, None]
        u = c[:, None, None] * px + s[:, None, None] * py
        v = -s[:, None, None] * px + c[:, None, None] * py
        ri, ti = r[i].astype(f32)[:, None, None], t[i].astype(f32)[:, None, None]
        d = _SDF[name](u, v, ri, ti)
        solid = np.clip(0.5 - d, 0, 1)
        if name == "cross":
            cover[i] = solid
        else:
            ring = np.clip(ti / 2 + 0.5 - np.abs(d), 0, 1)
            cover[i] = np.where(filled[i][:, None, None], solid, ring)

    # background: a colour (or grey) plus a linear gradient; foreground: a contrasting colour
    if channels == 1:
        bg = rng.uniform(0.05, 0.95, (n, 1))
        fg = _contrast(rng, bg, 0.3)
    else:
        bg = rng.uniform(0.0, 1.0, (n, 3))
        fg = _contrast(rng, bg, 0.2)
    phi = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0, 0.25, n)
    ramp = grid / max(size - 1, 1) - 0.5
    gradient = (np.cos(phi)[:, None, None] * ramp[None, None, :]
                + np.sin(phi)[:, None, None] * ramp[None, :, None]) * amp[:, None, None]
    sigma = rng.uniform(0.02, 0.10, n)

    x = np.empty((n, channels, size, size), f32)
    for ch in range(channels):
        b = (bg[:, ch, None, None] + gradient).astype(f32)
        x[:, ch] = b + (fg[:, ch, None, None] - b) * cover
    x += rng.standard_normal(x.shape, dtype=f32) * sigma.astype(f32)[:, None, None, None]
    np.clip(x, 0, 1, out=x)
    return x, y, classes
