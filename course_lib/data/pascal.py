"""A synthetic PASCAL VOC 2007 in the exact layout of fastai's ``untar_data(URLs.PASCAL_2007)``.

The real download is ~1.6 GB and needs the internet; the lessons on multi-label
classification and largest-object bounding boxes only need its *format*. So this
module draws small scenes of 1-3 objects, one recognisable look per VOC class
(shape + colour + texture), and writes them the way fastai ships them::

    pascal_2007/
        train/000005.jpg ...     trainval images, 6-digit ids with gaps like the real ones
        test/000001.jpg ...      a small held-out set, described by test.json
        train.csv                fname,labels,is_valid  (labels: sorted, space-separated, unique)
        train.json valid.json    COCO-style boxes for the is_valid False / True rows of train.csv
        test.json

Boxes are ``[x, y, w, h]`` in pixels, the tight extent of what was painted (object plus
its outline) clipped to the image, so ``x + w <= width``. ``area`` is ``w * h`` and
``segmentation`` is the box as a polygon, both as in fastai's converted VOC json.
What is *not* copied: the real ``segmentation/`` folder, and the real 50/50 train/valid
split (here about 20% is_valid, which is what the lessons' splitters expect).

Run ``python -m course_lib.data.pascal --profile ci`` to build it and print where it is.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from course_lib import config
from course_lib.data.common import build_once, real_dataset

VOC_CLASSES: list[str] = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]

# Number of trainval images (rows of train.csv) per profile. ci must build in seconds for
# tests; cpu is what a from-scratch resnet18 learns to >0.97 accuracy_multi in a few minutes.
PROFILE_SIZES: dict[str, int] = {"ci": 120, "cpu": 1500, "gpu": 5000}

# Longest image side per profile. VOC images are 500 px on the long side; ci keeps them
# small so that the tests and the ci notebooks decode and resize almost nothing.
PROFILE_IMAGE_SIZES: dict[str, int] = {"ci": 160, "cpu": 500, "gpu": 500}

# Bump when the drawing changes, so build_once replaces old copies instead of reusing them.
VERSION = 2
# The largest object's box is at least this many times the area of the next largest.
LARGEST_MARGIN = 1.5
VALID_FRACTION = 0.2
TEST_FRACTION = 0.1
JPEG_QUALITY = 90

# VOC is dominated by people (2008 of 5011 trainval images); a milder skew keeps that
# flavour without starving the other classes at the small sizes used here.
_CLASS_WEIGHTS = np.array([3.0 if c == "person" else 1.0 for c in VOC_CLASSES])
_N_OBJECTS_P = np.array([0.5, 0.3, 0.2])  # 1, 2 or 3 objects per image

_RGB = {
    "white": (245, 245, 245), "black": (20, 20, 20), "grey": (125, 125, 125), "light": (225, 225, 225),
    "dark": (40, 40, 40), "navy": (25, 35, 135), "blue": (35, 80, 225), "teal": (0, 135, 135),
    "cyan": (20, 215, 235), "lavender": (180, 160, 245), "purple": (120, 40, 180),
    "magenta": (225, 40, 190), "pink": (255, 150, 200), "red": (225, 25, 25), "maroon": (120, 15, 40),
    "brown": (125, 70, 30), "tan": (215, 175, 115), "skin": (245, 190, 150), "orange": (250, 135, 0),
    "yellow": (250, 220, 20), "lime": (160, 230, 40), "green": (30, 155, 55), "darkgreen": (15, 85, 35),
}


@dataclass(frozen=True)
class _Look:
    """How one category is painted: a silhouette with a fixed aspect, a colour and a texture."""

    shape: str
    aspect: float  # width / height of the silhouette
    colour: str
    texture: str
    second: str  # colour of the texture's marks


# One look per class, each cue unique on its own: 20 silhouettes, 20 fill colours, and
# (texture, mark colour) pairs that never repeat. Colour is what a network trained from
# scratch picks up first, so it gets the class most of the way in the first epochs;
# shapes loosely echo the real objects (a hull for boat, a T for diningtable) to help
# students remember them.
_LOOKS: dict[str, _Look] = {
    "aeroplane": _Look("plus", 1.0, "navy", "hstripes", "white"),
    "bicycle": _Look("ring", 1.0, "lime", "solid", "lime"),
    "bird": _Look("triangle", 1.1, "yellow", "dots", "black"),
    "boat": _Look("hull", 2.0, "brown", "hstripes", "light"),
    "bottle": _Look("bottle", 0.4, "green", "solid", "green"),
    "bus": _Look("rect", 2.2, "orange", "vstripes", "dark"),
    "car": _Look("dome", 2.0, "red", "solid", "red"),
    "cat": _Look("pentagon", 1.0, "purple", "dots", "white"),
    "chair": _Look("ell", 0.8, "cyan", "checker", "navy"),
    "cow": _Look("hexagon", 1.15, "white", "dots", "black"),
    "diningtable": _Look("tee", 1.3, "tan", "checker", "brown"),
    "dog": _Look("ellipse", 1.7, "maroon", "solid", "maroon"),
    "horse": _Look("star", 1.0, "pink", "dstripes", "maroon"),
    "motorbike": _Look("cross", 1.0, "magenta", "vstripes", "dark"),
    "person": _Look("figure", 0.5, "skin", "solid", "skin"),
    "pottedplant": _Look("vee", 1.0, "darkgreen", "dstripes", "lime"),
    "sheep": _Look("circle", 1.0, "lavender", "grid", "white"),
    "sofa": _Look("cup", 1.4, "blue", "solid", "blue"),
    "train": _Look("arrow", 2.2, "teal", "hstripes", "light"),
    "tvmonitor": _Look("square", 1.0, "black", "grid", "cyan"),
}


def _scaled(points: list[tuple[float, float]], w: int, h: int) -> list[tuple[float, float]]:
    """Unit-square points scaled to a w x h box (the last pixel is w-1, h-1)."""
    return [(x * (w - 1), y * (h - 1)) for x, y in points]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, w: int, h: int) -> None:
    """Paint the silhouette ``shape`` in 255 on a w x h mask that starts at 0."""
    full = (0, 0, w - 1, h - 1)

    def poly(pts: list[tuple[float, float]]) -> None:
        draw.polygon(_scaled(pts, w, h), fill=255)

    if shape == "plus":
        poly([(0, 0.36), (1, 0.36), (1, 0.64), (0, 0.64)])
        poly([(0.36, 0), (0.64, 0), (0.64, 1), (0.36, 1)])
    elif shape == "cross":
        t = 0.2
        poly([(0, t), (t, 0), (1, 1 - t), (1 - t, 1)])
        poly([(1 - t, 0), (1, t), (t, 1), (0, 1 - t)])
    elif shape == "ring":
        draw.ellipse(full, fill=255)
        draw.ellipse((0.3 * w, 0.3 * h, 0.7 * w - 1, 0.7 * h - 1), fill=0)
    elif shape == "triangle":
        poly([(0.5, 0), (1, 1), (0, 1)])
    elif shape == "vee":
        poly([(0, 0), (1, 0), (0.5, 1)])
    elif shape == "hull":
        poly([(0, 0), (1, 0), (0.78, 1), (0.22, 1)])
    elif shape == "bottle":
        poly([(0, 0.4), (0.3, 0.3), (0.3, 0), (0.7, 0), (0.7, 0.3), (1, 0.4), (1, 1), (0, 1)])
    elif shape in ("rect", "square"):
        draw.rectangle(full, fill=255)
    elif shape == "dome":
        draw.pieslice((0, 0, w - 1, 2 * h - 1), 180, 360, fill=255)
    elif shape in ("pentagon", "hexagon"):
        n = 5 if shape == "pentagon" else 6
        pts = [(0.5 + 0.5 * math.sin(2 * math.pi * k / n), 0.5 - 0.5 * math.cos(2 * math.pi * k / n))
               for k in range(n)]
        poly(pts)
    elif shape == "star":
        pts = []
        for k in range(10):
            r = 0.5 if k % 2 == 0 else 0.2
            a = math.pi * k / 5
            pts.append((0.5 + r * math.sin(a), 0.53 - r * math.cos(a)))
        poly(pts)
    elif shape == "ell":
        poly([(0, 0), (0.35, 0), (0.35, 0.65), (1, 0.65), (1, 1), (0, 1)])
    elif shape == "tee":
        poly([(0, 0), (1, 0), (1, 0.32), (0.65, 0.32), (0.65, 1), (0.35, 1), (0.35, 0.32), (0, 0.32)])
    elif shape == "cup":
        poly([(0, 0), (0.28, 0), (0.28, 0.55), (0.72, 0.55), (0.72, 0), (1, 0), (1, 1), (0, 1)])
    elif shape == "ellipse" or shape == "circle":
        draw.ellipse(full, fill=255)
    elif shape == "figure":
        draw.ellipse((0.2 * w, 0, 0.8 * w - 1, 0.3 * h - 1), fill=255)
        poly([(0.3, 0.3), (0.7, 0.3), (1, 1), (0, 1)])
    elif shape == "arrow":
        poly([(0, 0.3), (0.6, 0.3), (0.6, 0), (1, 0.5), (0.6, 1), (0.6, 0.7), (0, 0.7)])
    else:  # pragma: no cover - a typo in _LOOKS
        raise ValueError(f"unknown shape {shape!r}")


def _texture(look: _Look, w: int, h: int, fg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An h x w x 3 uint8 fill: the class colour with its texture marks."""
    # Marks scale with the object so they survive the 4x downsizing the lessons use.
    p = max(4.0, min(w, h) / rng.uniform(3.5, 5.0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx += rng.uniform(0, p)
    yy += rng.uniform(0, p)
    t = look.texture
    if t == "solid":
        marks = np.zeros((h, w), bool)
    elif t == "hstripes":
        marks = (yy / p) % 1 < 0.5
    elif t == "vstripes":
        marks = (xx / p) % 1 < 0.5
    elif t == "dstripes":
        marks = ((xx + yy) / p) % 1 < 0.5
    elif t == "dots":
        marks = (xx % p - p / 2) ** 2 + (yy % p - p / 2) ** 2 < (0.3 * p) ** 2
    elif t == "checker":
        marks = ((xx // (p / 1.5)) + (yy // (p / 1.5))) % 2 == 1
    elif t == "grid":
        marks = (xx % p < 0.25 * p) | (yy % p < 0.25 * p)
    else:  # pragma: no cover - a typo in _LOOKS
        raise ValueError(f"unknown texture {t!r}")
    second = np.clip(np.array(_RGB[look.second]) + rng.integers(-15, 16, 3), 0, 255)
    img = np.where(marks[..., None], second, fg).astype(np.float32)
    # Soft shading across the object, so it is not a flat sticker.
    shade = 1 + rng.uniform(-0.12, 0.12) * (xx / max(w, 1) - 0.5) + rng.uniform(-0.12, 0.12) * (yy / max(h, 1) - 0.5)
    return np.clip(img * shade[..., None], 0, 255).astype(np.uint8)


def _sprite(cat: int, size: float, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """One object: (RGB image, L mask) cropped to what was painted, outline included."""
    look = _LOOKS[VOC_CLASSES[cat]]
    aspect = look.aspect * math.exp(rng.uniform(-0.12, 0.12))
    w, h = (size, size / aspect) if aspect >= 1 else (size * aspect, size)
    w, h = max(6, round(w)), max(6, round(h))
    mask = Image.new("L", (w, h), 0)
    _draw_shape(ImageDraw.Draw(mask), look.shape, w, h)
    fg = np.clip(np.array(_RGB[look.colour]) + rng.integers(-20, 21, 3), 0, 255)
    rgb = Image.fromarray(_texture(look, w, h, fg, rng))
    # A contrasting outline keeps objects readable on busy backgrounds and on each other.
    pad = max(1, round(size / 40))
    edge = (235, 235, 235) if sum(_RGB[look.colour]) < 200 else (20, 20, 20)
    big = Image.new("L", (w + 2 * pad + 2, h + 2 * pad + 2), 0)
    big.paste(mask, (pad + 1, pad + 1))
    # Repeated 3x3 max filters dilate as far as one big one, at a fraction of the cost.
    outline = big
    for _ in range(pad):
        outline = outline.filter(ImageFilter.MaxFilter(3))
    canvas = Image.new("RGB", big.size, edge)
    canvas.paste(rgb, (pad + 1, pad + 1), mask)
    angle = rng.uniform(-15, 15)
    canvas = canvas.rotate(angle, resample=Image.BICUBIC, expand=True)
    outline = outline.rotate(angle, resample=Image.BILINEAR, expand=True)
    box = outline.getbbox()
    return canvas.crop(box), outline.crop(box)


def _background(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A VOC-ish backdrop: flat, gradient, cloudy or a horizon, always with sensor-like noise."""
    def muted() -> np.ndarray:
        # Greyish tints: saturated colour is left to the objects, the cue a network trained
        # from scratch learns first.
        base = rng.uniform(60, 200)
        return np.clip(base + rng.normal(0, 22, 3), 0, 255)

    kind = rng.integers(4)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    if kind == 0:
        img = np.broadcast_to(muted(), (h, w, 3)).astype(np.float32)
    elif kind == 1:
        a = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = muted() * (1 - t[..., None]) + muted() * t[..., None]
    elif kind == 2:
        k = int(rng.integers(3, 8))
        small = np.clip(rng.normal(muted(), 18, (k, k, 3)), 0, 255).astype(np.uint8)
        img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
    else:
        horizon = rng.uniform(0.3, 0.7) * h
        sky_top, sky_low, ground = muted(), muted(), muted()
        t = np.clip(yy / max(horizon, 1.0), 0, 1)[..., None]
        sky = sky_top * (1 - t) + sky_low * t
        img = np.where((yy < horizon)[..., None], sky, ground * (0.8 + 0.3 * (yy / h))[..., None])
        img = np.broadcast_to(img, (h, w, 3))
    # Grain shared by the channels plus a little colour noise, like a cheap camera.
    noise = rng.standard_normal((h, w, 1), dtype=np.float32) * rng.uniform(3, 14)
    noise = noise + rng.standard_normal((h, w, 3), dtype=np.float32) * 3
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _image_size(long_side: int, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): VOC's common 4:3 and 3:2 frames, mostly landscape, some odd ones."""
    ratio = rng.choice([0.75, 2 / 3, rng.uniform(0.6, 1.0)], p=[0.45, 0.3, 0.25])
    short = round(long_side * ratio)
    return (long_side, short) if rng.random() < 0.75 else (short, long_side)


def _render(long_side: int, rng: np.random.Generator) -> tuple[Image.Image, list[tuple[int, list[int]]]]:
    """One scene and its objects as (category index, [x, y, w, h]) in painting order.

    The largest box is at least ``LARGEST_MARGIN`` times the area of the next one, so
    that "the largest object" (lesson 05's label) is a property of the pixels. Scenes that
    miss it after placement (edges clip boxes, aspect ratios differ) are drawn again.
    """
    for _ in range(50):
        img, objects = _render_once(long_side, rng)
        areas = sorted((b[2] * b[3] for _, b in objects), reverse=True)
        if len(areas) < 2 or areas[0] >= LARGEST_MARGIN * areas[1]:
            break
    return img, objects


def _render_once(long_side: int, rng: np.random.Generator) -> tuple[Image.Image, list[tuple[int, list[int]]]]:
    w, h = _image_size(long_side, rng)
    img = Image.fromarray(_background(w, h, rng))
    n = int(rng.choice([1, 2, 3], p=_N_OBJECTS_P))
    cats = rng.choice(len(VOC_CLASSES), size=n, p=_CLASS_WEIGHTS / _CLASS_WEIGHTS.sum())
    # The first object is the big one; the others are at most 1/1.3 of its size.
    first = rng.uniform(math.log(0.45), math.log(0.8))
    rest = rng.uniform(math.log(0.3), first - math.log(1.3), n - 1)
    sizes = min(w, h) * np.exp(np.concatenate([[first], np.sort(rest)[::-1]]))
    # Big things go behind small ones; each placement is retried until every object keeps
    # at least half of itself visible, so labels stay recoverable from the pixels.
    masks: list[np.ndarray] = []
    placed: list[tuple[int, Image.Image, Image.Image, tuple[int, int], tuple[int, int, int, int]]] = []
    for cat, size in zip(cats, sizes):
        sprite, alpha = _sprite(int(cat), float(size), rng)
        sw, sh = sprite.size
        area = np.count_nonzero(np.asarray(alpha))
        for _ in range(30):
            # Photographers centre their subjects, so centres lean to the middle (which also
            # keeps most objects inside the square crops fastai's Resize takes); up to 40%
            # of an object may still hang off an edge, as in VOC's truncated objects.
            x0 = round(w * rng.beta(2, 2) - sw / 2)
            y0 = round(h * rng.beta(2, 2) - sh / 2)
            layer = Image.new("L", (w, h), 0)
            layer.paste(alpha, (x0, y0))
            m = np.asarray(layer) > 0
            if np.count_nonzero(m) < 0.6 * area:
                continue
            if _visible_enough(masks, m):
                masks.append(m)
                # The painted extent clipped to the image, occluded parts included.
                placed.append((int(cat), sprite, alpha, (x0, y0), layer.getbbox()))
                break
    objects = []
    for cat, sprite, alpha, pos, (left, top, right, bottom) in placed:
        img.paste(sprite, pos, alpha)
        objects.append((cat, [left, top, right - left, bottom - top]))
    return img, objects


def _visible_enough(masks: list[np.ndarray], new: np.ndarray) -> bool:
    """Whether every mask painted so far keeps half its pixels once ``new`` goes on top."""
    above = new.copy()
    for prev in reversed(masks):
        if np.count_nonzero(prev & ~above) < 0.5 * np.count_nonzero(prev):
            return False
        above |= prev
    return True


def _annotation(ann_id: int, image_id: int, cat: int, bbox: list[int]) -> dict:
    """One COCO annotation with the keys (and key order) of fastai's converted VOC json."""
    x, y, bw, bh = bbox
    return {
        "area": bw * bh, "iscrowd": 0, "image_id": image_id, "bbox": bbox,
        "category_id": cat + 1, "id": ann_id, "ignore": 0,
        "segmentation": [[x, y, x, y + bh, x + bw, y + bh, x + bw, y]],
    }


def _coco(images: list[dict], annotations: list[dict]) -> dict:
    """A COCO 'instances' file in fastai's key order."""
    return {
        "images": images,
        "type": "instances",
        "annotations": annotations,
        "categories": [{"supercategory": "none", "id": i + 1, "name": c} for i, c in enumerate(VOC_CLASSES)],
    }


def _draw_file(job: tuple[np.random.SeedSequence, int, Path]) -> tuple[int, int, list[tuple[int, list[int]]]]:
    """Draw one image from its own seed, save it as JPEG, return (width, height, objects).

    Top-level so that worker processes can run it.
    """
    seed_seq, image_size, path = job
    img, objects = _render(image_size, np.random.default_rng(seed_seq))
    img.save(path, quality=JPEG_QUALITY)
    return img.width, img.height, objects


def _n_workers(total: int) -> int:
    """Processes worth starting: none for small sets, where start-up would dominate.

    Only where ``fork`` is the safe default (Linux): with ``spawn`` every worker re-runs
    a student's script from the top unless it has an ``if __name__ == "__main__"`` guard.
    """
    if total < 300 or sys.platform != "linux":
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _builder(n_images: int, seed: int, image_size: int) -> Callable[[Path], None]:
    """The build function handed to build_once: writes the whole dataset into a folder."""

    def build(out: Path) -> None:
        n_test = max(1, round(n_images * TEST_FRACTION))
        total = n_images + n_test
        # One child seed per image plus one for the bookkeeping: an image never depends on
        # which process drew it or what was drawn before, so a seed always gives the same bytes.
        seeds = np.random.SeedSequence([seed, VERSION]).spawn(total + 1)
        rng = np.random.default_rng(seeds[-1])
        # Real ids skip numbers, and trainval and test ids interleave.
        ids = np.cumsum(rng.integers(1, 4, total))
        is_test = np.zeros(total, bool)
        is_test[rng.choice(total, n_test, replace=False)] = True
        n_valid = round(n_images * VALID_FRACTION)
        is_valid = np.zeros(n_images, bool)
        is_valid[rng.choice(n_images, n_valid, replace=False)] = True

        (out / "train").mkdir()
        (out / "test").mkdir()
        fnames = [f"{int(i):06d}.jpg" for i in ids]
        jobs = [(seeds[i], image_size, out / ("test" if is_test[i] else "train") / fnames[i]) for i in range(total)]
        workers = _n_workers(total)
        if workers == 1:
            drawn = [_draw_file(job) for job in jobs]
        else:
            # Workers touch only numpy and PIL (no torch, no BLAS), so forking a kernel that
            # holds torch's thread pools is safe here, as it is for torch's own DataLoader.
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                drawn = list(pool.map(_draw_file, jobs, chunksize=16))

        rows: list[tuple[str, str, str]] = []
        files: dict[str, tuple[list[dict], list[dict]]] = {k: ([], []) for k in ("train", "valid", "test")}
        ann_id, k = 1, 0
        for i, (width, height, objects) in enumerate(drawn):
            if is_test[i]:
                split = "test"
            else:
                split = "valid" if is_valid[k] else "train"
                labels = " ".join(sorted({VOC_CLASSES[c] for c, _ in objects}))
                rows.append((fnames[i], labels, "True" if is_valid[k] else "False"))
                k += 1
            images, anns = files[split]
            images.append({"file_name": fnames[i], "height": height, "width": width, "id": int(ids[i])})
            for cat, bbox in objects:
                anns.append(_annotation(ann_id, int(ids[i]), cat, bbox))
                ann_id += 1

        with open(out / "train.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["fname", "labels", "is_valid"])
            writer.writerows(rows)
        for split, (images, anns) in files.items():
            (out / f"{split}.json").write_text(json.dumps(_coco(images, anns)))

    return build


def make_pascal_2007(root: Path, n_images: int, seed: int = 0, image_size: int = 500) -> Path:
    """Build (once) a synthetic ``pascal_2007`` folder under ``root`` and return its path.

    ``n_images`` is the number of rows of ``train.csv`` (about 20% of them is_valid);
    a further ~10% go to ``test/``. ``image_size`` is the longest side in pixels (VOC: 500).
    A second call with the same arguments reuses the folder without redrawing anything.
    """
    if n_images < 2:
        raise ValueError("n_images must be at least 2 (one training and one validation image).")
    if image_size < 64:
        raise ValueError(f"image_size={image_size} is too small to draw recognisable objects; use 64 or more.")
    params = {"dataset": "pascal_2007", "version": VERSION, "seed": seed, "count": n_images,
              "image_size": image_size}
    return build_once(Path(root) / "pascal_2007", params, _builder(n_images, seed, image_size))


def get_pascal_2007(profile: str | None = None, seed: int = 0) -> Path:
    """The PASCAL_2007 folder for this course run: fastai's real one or the synthetic copy.

    With ``COURSE_DATA=real`` this is ``untar_data(URLs.PASCAL_2007)`` (and raises
    :class:`~course_lib.data.common.DownloadUnavailable` with advice when offline);
    otherwise the synthetic set sized for ``profile``, under ``data_root()/<profile>/``.
    """
    if config.data_source() == "real":
        return real_dataset("PASCAL_2007")
    prof = config.resolve_profile(profile)
    return make_pascal_2007(config.data_root() / prof, PROFILE_SIZES[prof], seed=seed,
                            image_size=PROFILE_IMAGE_SIZES[prof])


def summary(path: Path) -> str:
    """One line describing a pascal_2007 folder (real or synthetic), read from its files."""
    path = Path(path)
    with open(path / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n_valid = sum(r["is_valid"] == "True" for r in rows)
    counts = Counter(label for r in rows for label in r["labels"].split())
    n_objects = sum(len(json.loads((path / f"{s}.json").read_text())["annotations"]) for s in ("train", "valid"))
    rare, common = min(counts, key=counts.get), max(counts, key=counts.get)
    return (f"pascal_2007: {len(rows)} images ({len(rows) - n_valid} train, {n_valid} valid), "
            f"{n_objects} objects, {len(counts)} classes (most: {common} {counts[common]}, "
            f"fewest: {rare} {counts[rare]})")


def main(argv: list[str] | None = None) -> None:
    """Command line: build the dataset for a profile and print its path and summary."""
    parser = argparse.ArgumentParser(description="Make the synthetic PASCAL_2007 dataset.")
    parser.add_argument("--profile", choices=config.PROFILES, default=None,
                        help="dataset size (default: COURSE_PROFILE, else gpu if CUDA is available, else cpu)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = get_pascal_2007(args.profile, seed=args.seed)
    print(path)
    print(summary(path))


if __name__ == "__main__":
    main()
