"""Synthetic flowers in the layout of the Oxford 102 flowers copy used by the PyTorch tutorial.

The transfer-learning lesson (freeze a resnet, replace ``fc``, fine-tune) follows the classic
tutorial that reads the Oxford 102 flowers from folders. That download needs the internet,
and the lesson only needs its *format* and its *difficulty*: many related kinds of flower,
few training photos per kind. So this module paints flowers, one recipe per kind (petal
count and shape, colour palette, centre, stem and leaf), varied per photo (pose, tilt,
scale, position, lighting, cluttered and blurred background), and writes them as::

    flowers/
        train/1/image_00001.jpg ...   one folder per class, named "1".."N" like the real copy
        train/2/...
        valid/1/...                   a bigger held-out set, so accuracy is measured honestly
        cat_to_name.json              {"1": "oxeye daisy", "2": "black-eyed susan", ...}

``torchvision.datasets.ImageFolder(root / "train")`` reads it as is. As with the real copy,
ImageFolder sorts the folder names as *strings* ("1", "10", "11", "2", ...), so class index
``i`` is folder ``dataset.classes[i]``, which is the key into ``cat_to_name.json``.

Images are square RGB JPEGs (fixed quality) of ``size`` pixels; each is drawn from its own
``numpy.random.Generator`` seeded by ``(seed, class, split, index)``, so a build is
deterministic and adding classes or images leaves the existing ones unchanged.

Run ``python -m course_lib.data.flowers --profile ci`` to build it and print where it is.
"""
from __future__ import annotations

import argparse
import colorsys
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from course_lib import config
from course_lib.data.common import DownloadUnavailable, build_once

# Few training images per class is the point: that is where pretraining visibly matters.
# The valid sets are larger so that a few points of accuracy are signal, not noise.
PROFILE_SIZES: dict[str, dict[str, int]] = {
    "ci": {"n_classes": 6, "train_per_class": 4, "valid_per_class": 4, "size": 64},
    "cpu": {"n_classes": 16, "train_per_class": 6, "valid_per_class": 30, "size": 128},
    "gpu": {"n_classes": 20, "train_per_class": 10, "valid_per_class": 50, "size": 256},
}

# Bump when the drawing changes, so build_once replaces old copies instead of reusing them.
VERSION = 1
JPEG_QUALITY = 90
_SPLITS = ("train", "valid")
# Drawing happens at this multiple of the output size, then a LANCZOS downsample antialiases.
_SUPERSAMPLE = 2

HSV = tuple[float, float, float]


@dataclass(frozen=True)
class FlowerKind:
    """The recipe for one kind of flower; every photo of the kind jitters around it.

    Sizes are fractions of the flower's radius R; colours are HSV in [0, 1].
    """

    name: str
    petals: int  # petals per layer
    petal_jitter: int  # +- this many petals from photo to photo (composite flowers vary)
    shape: str  # "strap", "pointed", "round", "notched", "spoon", "fringed"
    width: float  # petal half-width at its widest, as a fraction of R
    layers: int  # rings of petals, the back ones larger and darker
    petal: HSV
    inner: HSV | None  # a second colour at the petal base (eyes, blotches, bands)
    inner_frac: float  # how far along the petal the inner colour reaches
    centre: HSV
    centre_size: float  # centre disc radius, as a fraction of R
    centre_texture: str  # "dots" (stamens / florets), "ring" (a contrasting eye) or "plain"
    leaf: str  # "lance", "round", "grass"


def _k(name: str, petals: int, jitter: int, shape: str, width: float, layers: int, petal: HSV,
       inner: HSV | None, inner_frac: float, centre: HSV, centre_size: float, texture: str,
       leaf: str) -> FlowerKind:
    return FlowerKind(name, petals, jitter, shape, width, layers, petal, inner, inner_frac,
                      centre, centre_size, texture, leaf)


# Kinds come in colour families that share a palette, so colour alone cannot tell most of
# them apart: the petals and the centre have to be looked at, which is what a handful of
# photos per class cannot teach from scratch. Ordered so that the first 4k kinds are
# k kinds from each of the four families (yellow, white, pink, blue-violet), then the rest.
FLOWER_KINDS: list[FlowerKind] = [
    _k("buttercup", 5, 0, "round", 0.60, 1, (0.15, 0.90, 0.98),
       None, 0, (0.20, 0.70, 0.75), 0.16, "dots", "round"),
    _k("oxeye daisy", 21, 2, "strap", 0.10, 1, (0.15, 0.04, 0.97),
       None, 0, (0.13, 0.90, 0.95), 0.22, "dots", "lance"),
    _k("wild rose", 5, 0, "notched", 0.62, 1, (0.93, 0.45, 0.95),
       (0.00, 0.04, 1.00), 0.35, (0.14, 0.90, 0.90), 0.18, "dots", "round"),
    _k("blue flax", 5, 0, "round", 0.48, 1, (0.64, 0.55, 0.90),
       None, 0, (0.15, 0.30, 0.95), 0.10, "plain", "grass"),
    _k("black-eyed susan", 14, 2, "strap", 0.15, 1, (0.14, 0.90, 0.97),
       None, 0, (0.05, 0.70, 0.20), 0.27, "dots", "lance"),
    _k("frangipani", 5, 0, "spoon", 0.60, 1, (0.12, 0.05, 0.98),
       (0.14, 0.80, 1.00), 0.40, (0.14, 0.80, 1.00), 0.06, "plain", "round"),
    _k("cosmos", 8, 0, "notched", 0.40, 1, (0.92, 0.50, 0.92),
       None, 0, (0.13, 0.90, 0.90), 0.18, "dots", "grass"),
    _k("periwinkle", 5, 0, "spoon", 0.52, 1, (0.68, 0.55, 0.88),
       None, 0, (0.00, 0.00, 1.00), 0.10, "ring", "round"),
    _k("sunflower", 22, 2, "pointed", 0.16, 2, (0.14, 0.92, 0.95),
       None, 0, (0.07, 0.70, 0.30), 0.42, "dots", "round"),
    _k("wood anemone", 6, 0, "round", 0.55, 1, (0.15, 0.03, 0.97),
       None, 0, (0.15, 0.85, 0.90), 0.14, "dots", "lance"),
    _k("purple coneflower", 13, 2, "strap", 0.17, 1, (0.91, 0.50, 0.88),
       None, 0, (0.06, 0.85, 0.55), 0.32, "dots", "lance"),
    _k("cornflower", 9, 1, "fringed", 0.35, 1, (0.65, 0.65, 0.85),
       None, 0, (0.70, 0.80, 0.40), 0.20, "dots", "grass"),
    _k("primrose", 5, 0, "notched", 0.60, 1, (0.15, 0.70, 1.00),
       (0.13, 0.95, 0.95), 0.30, (0.20, 0.70, 0.80), 0.08, "plain", "round"),
    _k("shasta daisy", 24, 2, "strap", 0.13, 2, (0.15, 0.02, 0.99),
       None, 0, (0.14, 0.85, 0.95), 0.20, "dots", "lance"),
    _k("pink lotus", 10, 1, "pointed", 0.38, 2, (0.93, 0.40, 0.95),
       None, 0, (0.16, 0.80, 0.85), 0.20, "ring", "round"),
    _k("clematis", 6, 0, "pointed", 0.45, 1, (0.70, 0.55, 0.80),
       None, 0, (0.14, 0.30, 0.95), 0.20, "dots", "round"),
    _k("common poppy", 4, 0, "round", 0.90, 1, (0.00, 0.95, 0.88),
       (0.00, 0.20, 0.10), 0.22, (0.00, 0.10, 0.12), 0.14, "ring", "grass"),
    _k("california poppy", 4, 0, "round", 0.90, 1, (0.07, 0.95, 1.00),
       (0.11, 0.90, 1.00), 0.40, (0.10, 0.80, 0.90), 0.08, "plain", "grass"),
    _k("gazania", 14, 1, "pointed", 0.20, 1, (0.08, 0.95, 0.98),
       (0.02, 0.60, 0.25), 0.30, (0.12, 0.90, 0.90), 0.20, "dots", "lance"),
    _k("stargazer lily", 6, 0, "pointed", 0.32, 1, (0.93, 0.55, 0.95),
       (0.96, 0.85, 0.70), 0.50, (0.30, 0.60, 0.60), 0.10, "plain", "lance"),
    _k("anemone", 6, 0, "round", 0.60, 1, (0.72, 0.60, 0.70),
       None, 0, (0.70, 0.50, 0.10), 0.30, "dots", "lance"),
    _k("morning glory", 5, 0, "round", 0.95, 1, (0.62, 0.70, 0.90),
       (0.00, 0.00, 1.00), 0.40, (0.15, 0.60, 0.95), 0.08, "plain", "round"),
    _k("french marigold", 14, 2, "fringed", 0.40, 3, (0.08, 0.95, 0.95),
       (0.02, 0.80, 0.50), 0.30, (0.10, 0.90, 0.80), 0.12, "plain", "lance"),
    _k("pompon dahlia", 16, 2, "round", 0.35, 3, (0.88, 0.80, 0.80),
       None, 0, (0.88, 0.80, 0.60), 0.10, "plain", "round"),
    _k("orange gerbera", 18, 2, "strap", 0.20, 2, (0.05, 0.95, 1.00),
       None, 0, (0.10, 0.50, 0.30), 0.25, "ring", "lance"),
]

MAX_CLASSES = len(FLOWER_KINDS)


def flower_names(n_classes: int) -> dict[str, str]:
    """``cat_to_name`` for the first ``n_classes`` kinds: folder name ("1".."N") -> flower name."""
    _check_n_classes(n_classes)
    return {str(i + 1): FLOWER_KINDS[i].name for i in range(n_classes)}


def _check_n_classes(n_classes: int) -> None:
    if not 1 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must be between 1 and {MAX_CLASSES}, not {n_classes}.")


# ---------------------------------------------------------------------------------------------
# drawing


def _rgb(hsv: HSV) -> tuple[int, int, int]:
    h, s, v = hsv
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _jitter(rng: np.random.Generator, hsv: HSV, dh: float = 0.03, ds: float = 0.12, dv: float = 0.1) -> HSV:
    h, s, v = hsv
    # Near-white and near-black colours have no meaningful hue, so only their value moves.
    return (h + rng.uniform(-dh, dh), s + rng.uniform(-ds, ds) * (s > 0.15), v + rng.uniform(-dv, dv))


def _shade(hsv: HSV, factor: float) -> HSV:
    return (hsv[0], hsv[1], hsv[2] * factor)


def _half_width(shape: str, t: np.ndarray) -> np.ndarray:
    """Petal half-width along its axis, t in [0, 1] from base to tip, peaking at 1."""
    if shape == "strap":  # ray florets: narrow base, long parallel sides, rounded tip
        return np.clip(np.minimum(t * 5.0, 1.0), 0, 1) * np.sqrt(np.clip(1 - t, 0, 1) * 4).clip(max=1)
    if shape == "pointed":  # widest a third of the way out, ending in a sharp tip
        return np.sin(np.pi * t ** 0.65) * (1 - t) ** 0.15
    if shape == "spoon":  # thin claw, broad tip
        return np.sin(np.pi * np.clip(t, 0, 1) ** 1.6) ** 0.7
    # round, notched and fringed share a broad, full outline; their tips differ.
    return np.sin(np.pi * t) ** 0.45


def _petal_outline(shape: str, base: float, length: float, width: float, rng: np.random.Generator) -> np.ndarray:
    """(k, 2) polygon of one petal along +x, from radius ``base`` to ``base + length``."""
    t = np.linspace(0.0, 1.0, 24)
    w = _half_width(shape, t) * width
    x = base + t * length
    side_a = np.stack([x, w], 1)
    side_b = np.stack([x, -w], 1)[::-1]
    tip: list[tuple[float, float]] = []
    if shape == "notched":  # a V cut into the tip, as on wild roses and cosmos
        tip = [(base + length * 0.96, width * 0.45), (base + length * 0.82, 0.0), (base + length * 0.96, -width * 0.45)]
        side_a = side_a[t < 0.9]
        side_b = side_b[t[::-1] < 0.9]
    elif shape == "fringed":  # a ragged row of teeth across the tip
        side_a = side_a[t < 0.8]
        side_b = side_b[t[::-1] < 0.8]
        teeth = 5
        ys = np.linspace(width * 0.85, -width * 0.85, 2 * teeth + 1)
        for j, y in enumerate(ys):
            out = 1.0 if j % 2 == 0 else 0.86 + rng.uniform(-0.03, 0.03)
            tip.append((base + length * out, float(y)))
    pts = [tuple(p) for p in side_a] + tip + [tuple(p) for p in side_b]
    return np.asarray(pts, dtype=np.float64)


class _Pose:
    """Rotation, tilt (foreshortening of the flower's disc) and placement, as one affine map."""

    def __init__(self, centre: tuple[float, float], radius: float, rotation: float, tilt: float,
                 tilt_axis: float) -> None:
        c, s = math.cos(tilt_axis), math.sin(tilt_axis)
        rot = np.array([[c, -s], [s, c]])
        squash = np.diag([1.0, tilt])
        self.m = rot @ squash @ rot.T * radius
        self.rotation = rotation
        self.centre = np.asarray(centre)

    def __call__(self, pts: np.ndarray, angle: float = 0.0) -> list[tuple[float, float]]:
        a = angle + self.rotation
        c, s = math.cos(a), math.sin(a)
        local = pts @ np.array([[c, s], [-s, c]])
        out = local @ self.m.T + self.centre
        return [(float(x), float(y)) for x, y in out]


def _circle(r: float, n: int = 40) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(a), np.sin(a)], 1) * r


def _draw_flower(draw: ImageDraw.ImageDraw, kind: FlowerKind, rng: np.random.Generator, pose: _Pose, line: int) -> None:
    """Petals back to front, then the centre, in ``pose`` (coordinates in units of R)."""
    petal = _jitter(rng, kind.petal)
    inner = _jitter(rng, kind.inner) if kind.inner is not None else None
    centre = _jitter(rng, kind.centre)
    n = max(3, kind.petals + int(rng.integers(-kind.petal_jitter, kind.petal_jitter + 1)))
    base = kind.centre_size * 0.6
    for layer in range(kind.layers - 1, -1, -1):
        # Back layers are larger, offset by half a petal and in shadow, which is what makes
        # a many-layered dahlia look different from a single ring of the same petals.
        scale = 1.0 - 0.22 * layer
        length = (1.0 - base) * scale
        shade = 1.0 - 0.12 * layer
        offset = (math.pi / n) * layer
        for j in range(n):
            angle = offset + 2 * math.pi * j / n + rng.normal(0, 0.04)
            own_len = length * rng.uniform(0.9, 1.05)
            width = kind.width * rng.uniform(0.9, 1.1) * (scale if kind.layers > 1 else 1.0)
            outline = _petal_outline(kind.shape, base, own_len, width, rng)
            col = _shade(petal, shade * rng.uniform(0.92, 1.05))
            draw.polygon(pose(outline, angle), fill=_rgb(col), outline=_rgb(_shade(col, 0.72)), width=line)
            if inner is not None:
                inner_outline = _petal_outline(kind.shape, base, own_len * kind.inner_frac, width * 0.85, rng)
                draw.polygon(pose(inner_outline, angle), fill=_rgb(_shade(inner, shade)))
    r = kind.centre_size
    draw.polygon(pose(_circle(r)), fill=_rgb(centre), outline=_rgb(_shade(centre, 0.6)), width=line)
    if kind.centre_texture == "dots":  # florets or stamens: speckles lighter and darker than the disc
        for _ in range(int(40 * r / 0.2)):
            rr = r * math.sqrt(rng.uniform(0, 0.85))
            a = rng.uniform(0, 2 * math.pi)
            d = _circle(r * 0.07, 8) + np.array([rr * math.cos(a), rr * math.sin(a)])
            draw.polygon(pose(d), fill=_rgb(_shade(centre, rng.choice([0.55, 1.3]))))
    elif kind.centre_texture == "ring":  # a contrasting eye inside the disc
        eye = (centre[0], centre[1] * 0.4, 1.0 - centre[2] * 0.7)
        draw.polygon(pose(_circle(r * 0.5)), fill=_rgb(eye))


def _leaf_outline(leaf: str, length: float) -> np.ndarray:
    t = np.linspace(0, 1, 16)
    if leaf == "round":
        w = np.sin(np.pi * t) ** 0.7 * 0.35
    elif leaf == "grass":
        w = (1 - t) * 0.05
    else:  # lance
        w = np.sin(np.pi * t) * (1 - t) ** 0.3 * 0.16
    x = t * length
    return np.concatenate([np.stack([x, w * length], 1), np.stack([x, -w * length], 1)[::-1]])


def _draw_stem(draw: ImageDraw.ImageDraw, kind: FlowerKind, rng: np.random.Generator, top: tuple[float, float],
               radius: float, canvas: int) -> None:
    """A curved stem from the flower down past the bottom edge, with a few leaves on it."""
    green = _jitter(rng, (0.28, 0.65, 0.45), dh=0.04, ds=0.1, dv=0.12)
    x0, y0 = top
    bend = rng.uniform(-0.5, 0.5) * canvas
    ts = np.linspace(0, 1, 20)
    xs = x0 + bend * ts ** 2 * 0.5 + rng.uniform(-0.1, 0.1) * canvas * ts
    ys = y0 + (canvas * 1.1 - y0) * ts
    draw.line(list(zip(xs.tolist(), ys.tolist())), fill=_rgb(green), width=max(2, int(radius * 0.07)))
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(6, 18))
        side = rng.choice([-1.0, 1.0])
        angle = -math.pi / 2 + side * rng.uniform(0.5, 1.3)
        length = radius * rng.uniform(0.6, 1.1) * (1.6 if kind.leaf == "grass" else 1.0)
        pts = _leaf_outline(kind.leaf, length)
        c, s = math.cos(angle), math.sin(angle)
        world = pts @ np.array([[c, s], [-s, c]]) + np.array([xs[i], ys[i]])
        col = _shade(green, rng.uniform(0.85, 1.2))
        draw.polygon([(float(a), float(b)) for a, b in world], fill=_rgb(col), outline=_rgb(_shade(col, 0.7)))


_BACKGROUNDS: dict[str, tuple[HSV, HSV]] = {
    # (top colour, bottom colour) of the vertical gradient each scene starts from
    "foliage": ((0.30, 0.60, 0.25), (0.27, 0.70, 0.35)),
    "meadow": ((0.22, 0.55, 0.55), (0.25, 0.65, 0.40)),
    "soil": ((0.08, 0.45, 0.35), (0.07, 0.55, 0.22)),
    "sky": ((0.58, 0.45, 0.90), (0.30, 0.55, 0.45)),
    "shade": ((0.35, 0.30, 0.15), (0.30, 0.40, 0.25)),
}


def _background(rng: np.random.Generator, canvas: int, kind: FlowerKind) -> Image.Image:
    """A blurred garden: gradient, leafy blobs, grass blades, out-of-focus blossoms of any colour."""
    name = list(_BACKGROUNDS)[int(rng.integers(len(_BACKGROUNDS)))]
    top, bottom = (_jitter(rng, c, dh=0.04, ds=0.1, dv=0.1) for c in _BACKGROUNDS[name])
    ramp = np.linspace(0, 1, canvas)[:, None, None]
    grad = np.array(_rgb(top))[None, None] * (1 - ramp) + np.array(_rgb(bottom))[None, None] * ramp
    img = Image.fromarray(np.broadcast_to(grad, (canvas, canvas, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 20))):  # leaves and shadows
        x, y = rng.uniform(0, canvas, 2)
        rx, ry = rng.uniform(0.03, 0.15, 2) * canvas
        col = _jitter(rng, (rng.uniform(0.2, 0.38), 0.6, rng.uniform(0.15, 0.6)), dh=0, ds=0.2, dv=0.1)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=_rgb(col))
    for _ in range(int(rng.integers(0, 25))):  # grass blades
        x = rng.uniform(0, canvas)
        h = rng.uniform(0.1, 0.5) * canvas
        col = _jitter(rng, (0.25, 0.6, 0.5), dh=0.05, ds=0.2, dv=0.25)
        draw.line([(x, canvas), (x + rng.uniform(-0.1, 0.1) * canvas, canvas - h)], fill=_rgb(col),
                  width=max(1, canvas // 90))
    for _ in range(int(rng.integers(0, 5))):  # bokeh of other flowers: colour alone is no giveaway
        x, y = rng.uniform(0, canvas, 2)
        r = rng.uniform(0.02, 0.07) * canvas
        col = (rng.uniform(0, 1), rng.uniform(0.2, 0.9), rng.uniform(0.6, 1.0))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_rgb(col))
    if rng.uniform() < 0.35:  # a second, smaller bloom of the same kind further back
        r2 = rng.uniform(0.12, 0.22) * canvas
        c2 = (rng.uniform(0, 1) * canvas, rng.uniform(0, 0.6) * canvas)
        _draw_stem(draw, kind, rng, c2, r2, canvas)
        _draw_flower(draw, kind, rng, _Pose(c2, r2, rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 1.0),
                                            rng.uniform(0, math.pi)), line=1)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.006, 0.025) * canvas))


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Exposure, white balance, a directional light gradient and sensor noise."""
    x = img.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    x = x * rng.uniform(0.7, 1.2) * rng.uniform(0.9, 1.1, size=3)[None, None]
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w) - 0.5
    x = x * (1.0 + rng.uniform(0.0, 0.35) * (np.cos(a) * xx + np.sin(a) * yy))[..., None]
    x = (x - 0.5) * rng.uniform(0.85, 1.15) + 0.5
    x = x + rng.normal(0, rng.uniform(0.005, 0.025), size=x.shape)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def render_flower(kind: FlowerKind, rng: np.random.Generator, size: int = 128) -> Image.Image:
    """One photo of ``kind``: an RGB PIL image of shape (size, size)."""
    canvas = size * _SUPERSAMPLE
    img = _background(rng, canvas, kind)
    draw = ImageDraw.Draw(img)
    radius = rng.uniform(0.22, 0.42) * canvas
    centre = (rng.uniform(0.32, 0.68) * canvas, rng.uniform(0.3, 0.62) * canvas)
    pose = _Pose(centre, radius, rng.uniform(0, 2 * math.pi), rng.uniform(0.55, 1.0), rng.uniform(0, math.pi))
    _draw_stem(draw, kind, rng, centre, radius, canvas)
    _draw_flower(draw, kind, rng, pose, line=max(1, canvas // 120))
    if rng.uniform() < 0.2:  # a blurred leaf in front, partly hiding the bloom
        front = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
        fd = ImageDraw.Draw(front)
        x = rng.choice([rng.uniform(-0.1, 0.2), rng.uniform(0.8, 1.1)]) * canvas
        y = rng.uniform(0.5, 1.0) * canvas
        r = rng.uniform(0.15, 0.3) * canvas
        fd.ellipse([x - r, y - r * 0.5, x + r, y + r * 0.5], fill=_rgb(_jitter(rng, (0.3, 0.7, 0.3))) + (255,))
        front = front.filter(ImageFilter.GaussianBlur(canvas * 0.02))
        img.paste(front, (0, 0), front)
    img = img.resize((size, size), Image.LANCZOS)
    return Image.fromarray(_lighting(rng, np.asarray(img)))


# ---------------------------------------------------------------------------------------------
# dataset


def make_flowers(root: Path, n_classes: int, train_per_class: int, valid_per_class: int, seed: int = 0,
                 size: int = 128) -> Path:
    """Write the flowers into ``root`` (created if needed) and return ``root``.

    Layout: ``root/{train,valid}/<"1".."n_classes">/image_XXXXX.jpg`` (RGB, ``size`` x ``size``,
    so ``ImageFolder`` + ``ToTensor`` gives tensors of shape (3, size, size)) and
    ``root/cat_to_name.json``. Image numbers run over the whole set, train first, as in the real copy.
    """
    _check_n_classes(n_classes)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    counts = {"train": train_per_class, "valid": valid_per_class}
    number = 0
    for split_id, split in enumerate(_SPLITS):
        for c in range(n_classes):
            folder = root / split / str(c + 1)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(counts[split]):
                number += 1
                # One generator per image: the picture depends only on (seed, class, split, i).
                rng = np.random.default_rng([seed, c, split_id, i])
                img = render_flower(FLOWER_KINDS[c], rng, size)
                img.save(folder / f"image_{number:05d}.jpg", quality=JPEG_QUALITY)
    (root / "cat_to_name.json").write_text(json.dumps(flower_names(n_classes), indent=1))
    return root


_REAL_HELP = (
    "COURSE_DATA=real wants the Oxford 102 flowers in the PyTorch-tutorial layout "
    "(train/<1..102>/*.jpg, valid/<1..102>/*.jpg, cat_to_name.json) at {path}, and it is not there. "
    "Get flower_data.tar.gz from the Udacity/PyTorch 'Image Classifier' project (plus its "
    "cat_to_name.json) and extract it there. fastai's URLs.FLOWERS is the same photos in a "
    "different layout (one jpg/ folder with train.txt/valid.txt/test.txt label lists), so it "
    "would need re-sorting into class folders first. Or unset COURSE_DATA to use the synthetic "
    "flowers, which have the same layout."
)


def real_flowers_path() -> Path:
    """Where the real Oxford 102 flowers are looked for when ``COURSE_DATA=real``."""
    return config.data_root() / "real" / "flowers"


def get_flowers(profile: str | None = None, seed: int = 0) -> Path:
    """The flowers folder for ``profile`` (see ``PROFILE_SIZES``), built once and then reused.

    With ``COURSE_DATA=real`` this is the real Oxford 102 flowers, in the same
    ``train/<class>/``, ``valid/<class>/``, ``cat_to_name.json`` layout, read from
    ``config.data_root()/"real"/"flowers"``; nothing is downloaded (the copy in that layout
    is not on fastai's servers), and if it is missing this raises ``DownloadUnavailable``
    saying how to get it. Otherwise the synthetic flowers are built under
    ``config.data_root()/<profile>/"flowers"``.
    """
    if config.data_source() == "real":
        path = real_flowers_path()
        if (path / "train").is_dir() and (path / "valid").is_dir() and (path / "cat_to_name.json").is_file():
            return path
        raise DownloadUnavailable(_REAL_HELP.format(path=path))
    prof = config.resolve_profile(profile)
    sizes = PROFILE_SIZES[prof]
    params = {"dataset": "flowers", "version": VERSION, "seed": seed, "jpeg_quality": JPEG_QUALITY, **sizes}
    target = config.data_root() / prof / "flowers"
    return build_once(target, params, lambda tmp: make_flowers(tmp, seed=seed, **sizes))


def summary(path: Path) -> str:
    """One line: where the flowers are and how many images of which size each split has."""
    path = Path(path)
    names = json.loads((path / "cat_to_name.json").read_text())
    counts = {s: sum(1 for _ in (path / s).glob("*/*.jpg")) for s in _SPLITS}
    first = next((path / "train").glob("*/*.jpg"))
    with Image.open(first) as im:
        w, h = im.size
    return (f"flowers: {len(names)} classes, {counts['train']} train / {counts['valid']} valid images "
            f"of {w}x{h} px at {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=config.PROFILES, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = get_flowers(args.profile, seed=args.seed)
    print(f"{summary(path)} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
