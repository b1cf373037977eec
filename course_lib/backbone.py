"""A pretrained resnet for the transfer-learning lesson, without the internet.

The classic tutorial calls ``models.resnet18(pretrained=True)``, which downloads ImageNet
weights. :func:`pretrained_resnet` uses those weights when they are *already* in the torch
hub cache, and never downloads. Otherwise it pretrains the resnet itself on a synthetic
*source task* whose classes are not flowers (:func:`source_task_classes`: "red cog",
"blue ring", ... 8 geometric shapes x 5 colour families, randomly textured, rotated and
placed on cluttered backgrounds), caches the result under
``config.data_root()/"weights"`` and reuses it. Either way the model is a plain torchvision
resnet, so the tutorial's ``model.fc = nn.Linear(model.fc.in_features, n_classes)`` works
unchanged, and inputs are normalised with the ImageNet mean and std in both cases.

Run ``python -m course_lib.backbone`` to fetch or make it and print one line about it.
"""
from __future__ import annotations

import argparse
import colorsys
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import nn

from course_lib import config

# The synthetic pretraining normalises with ImageNet's statistics too, so the same data
# pipeline is right whichever weights were loaded.
from course_lib.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_weights_cached,
    imagenet_weights_path,  # noqa: F401 - callers look for it here too
    profile_settings,
    progress_bar,
    save_atomic,
)

# The source task labels every image with four attributes at once. A single label (say
# "red cog") would teach the network to throw away whatever the label ignores, such as the
# texture or a mark in the middle; asking for all four keeps them all in the features, which
# is what makes the features worth reusing for a task nobody planned for.
SOURCE_ATTRIBUTES: dict[str, list[str]] = {
    "shape": ["disc", "square", "triangle", "plus", "ring", "star", "sunburst", "cog"],
    "colour": ["red", "yellow", "green", "blue", "purple", "white"],
    "texture": ["plain", "striped", "dotted", "checked"],
    "mark": ["unmarked", "dark-marked", "light-marked"],  # a round mark at the object's centre
}
# Hue of each colour family; "white" is any hue at very low saturation.
_HUES = {"red": 0.0, "yellow": 0.15, "green": 0.33, "blue": 0.6, "purple": 0.78, "white": 0.0}

# Bump when the source task or the training recipe changes, so old caches are not reused.
SOURCE_VERSION = 3
# Tuned so resnet18 pretrains in a few minutes on a 2-core laptop CPU.
DEFAULT_STEPS = 600
DEFAULT_BATCH_SIZE = 32
DEFAULT_IMAGE_SIZE = 48

_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

# The pretraining each profile makes when no ImageNet weights are cached (lessons 02 and 03 load the
# same one); each setting has its own cache file. `cpu`: 400 steps take about two minutes on an idle
# 2-core machine and leave fine-tuning far ahead of training from scratch.
PRETRAIN_SETTINGS: dict[str, dict] = {
    "ci": dict(steps=30, batch_size=16, image_size=32),
    "cpu": dict(steps=400, batch_size=32, image_size=48),
    "gpu": dict(steps=3000, batch_size=128, image_size=64),
}

pretrain_settings = profile_settings(PRETRAIN_SETTINGS, "backbone pretraining")


def source_task_classes() -> list[str]:
    """Names of the source model's ``fc`` outputs, in order: ``"<attribute>:<value>"``, 21 of them.

    The source task is four classifications of the same image, one per attribute of the
    single object in it (``SOURCE_ATTRIBUTES``: 8 shapes, 6 colour families, 4 textures,
    3 kinds of centre mark). ``fc`` has one output per value; each attribute's block of
    outputs is a softmax of its own. Size, position, rotation, exact shade, lighting and
    the cluttered background are random nuisances.
    """
    return [f"{attr}:{value}" for attr, values in SOURCE_ATTRIBUTES.items() for value in values]


def _attribute_slices() -> list[slice]:
    out, start = [], 0
    for values in SOURCE_ATTRIBUTES.values():
        out.append(slice(start, start + len(values)))
        start += len(values)
    return out


# ---------------------------------------------------------------------------------------------
# the source task


def _shape_polygons(shape: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(filled, holes) polygons of ``shape`` in unit coordinates, roughly within radius 1."""
    a = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    circle = np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "disc":
        return [circle], []
    if shape == "ring":
        return [circle], [circle * 0.6]
    if shape == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.8], []
    if shape == "triangle":
        t = np.linspace(0, 2 * np.pi, 3, endpoint=False) - np.pi / 2
        return [np.stack([np.cos(t), np.sin(t)], 1)], []
    if shape == "plus":
        w = 0.33
        return [np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w],
                          [-1, -w], [-w, -w]])], []
    if shape == "star":  # five sharp points
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [np.stack([np.cos(t) * r, np.sin(t) * r], 1)], []
    if shape == "sunburst":  # many thin rays around a hub
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        r = 0.35 + 0.65 * (np.cos(t * 12) > 0.0)
        return [np.stack([np.cos(t) * r, np.sin(t) * r], 1)], []
    if shape == "cog":  # a disc with square teeth
        t = np.linspace(0, 2 * np.pi, 80, endpoint=False)
        r = np.where(np.sin(t * 10) > 0, 1.0, 0.8)
        return [np.stack([np.cos(t) * r, np.sin(t) * r], 1)], []
    raise ValueError(f"unknown shape {shape!r}")


def _texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) bool pattern: where the second colour goes."""
    if kind == "plain":
        return np.zeros((size, size), bool)
    a = rng.uniform(0, np.pi)
    period = rng.uniform(0.1, 0.16) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xx * math.cos(a) + yy * math.sin(a)) / period + rng.uniform(0, 1)
    v = (-xx * math.sin(a) + yy * math.cos(a)) / period + rng.uniform(0, 1)
    if kind == "striped":
        return (u % 1.0) < 0.5
    if kind == "checked":
        return ((np.floor(u) + np.floor(v)) % 2) == 0
    return ((u % 1.0 - 0.5) ** 2 + (v % 1.0 - 0.5) ** 2) < 0.28 ** 2  # dotted


def _hsv(h: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(sat, 0.0), 1.0), min(max(val, 0.0), 1.0))) * 255


def _dull_colour(rng: np.random.Generator) -> np.ndarray:
    """A background colour: any hue, but greyish and never bright, so the object stands out."""
    return _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.45), rng.uniform(0.15, 0.75))


def _family_colour(colour: str, rng: np.random.Generator) -> tuple[float, float, float]:
    if colour == "white":
        return rng.uniform(0, 1), rng.uniform(0.0, 0.12), rng.uniform(0.85, 1.0)
    return _HUES[colour] + rng.uniform(-0.05, 0.05), rng.uniform(0.4, 1.0), rng.uniform(0.55, 1.0)


def render_source_image(labels: tuple[int, ...], rng: np.random.Generator,
                        size: int = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """One source-task image: uint8 array of shape (size, size, 3).

    ``labels`` holds one index per attribute of ``SOURCE_ATTRIBUTES``, in order.
    """
    shape, colour, texture, mark = (values[i] for values, i in zip(SOURCE_ATTRIBUTES.values(), labels))
    # Background: a gradient between two dull colours with clutter lines and blobs, so the
    # network must find the object rather than read the whole frame.
    ramp_dir = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    ramp = (np.cos(ramp_dir) * xx + np.sin(ramp_dir) * yy + 0.5)[..., None]
    bg = _dull_colour(rng) * (1 - ramp) + _dull_colour(rng) * ramp
    img = Image.fromarray(bg.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        p = rng.uniform(0, size, 4)
        col = tuple(int(c) for c in _hsv(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.2, 1)))
        if rng.uniform() < 0.6:
            draw.line(p.tolist(), fill=col, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(0.02, 0.06) * size
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=col)
    if rng.uniform() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    # The object: a rotated, stretched shape, textured in two shades of its colour family.
    mask = Image.new("L", (size, size), 0)
    md = ImageDraw.Draw(mask)
    radius = rng.uniform(0.28, 0.45) * size
    centre = rng.uniform(0.6 * radius, size - 0.6 * radius, size=2)
    rot = rng.uniform(0, 2 * np.pi)
    stretch = np.diag([rng.uniform(0.8, 1.2), 1.0])
    m = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]]) @ stretch * radius
    filled, holes = _shape_polygons(shape)
    for poly, value in [(p, 255) for p in filled] + [(p, 0) for p in holes]:
        pts = poly @ m.T + centre
        md.polygon([(float(x), float(y)) for x, y in pts], fill=value)
    h, sat, val = _family_colour(colour, rng)
    fg = _hsv(h, sat, val)
    fg2 = _hsv(h, sat * rng.uniform(0.5, 0.9), val * rng.uniform(0.55, 0.75))
    pattern = _texture(texture, rng, size)[..., None]
    obj = np.where(pattern, fg2, fg)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    out = np.asarray(img, dtype=np.float32) * (1 - alpha) + obj * alpha
    if mark != "unmarked":
        r = radius * rng.uniform(0.22, 0.32)
        mark_img = Image.new("L", (size, size), 0)
        ImageDraw.Draw(mark_img).ellipse([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r], fill=255)
        mark_alpha = np.asarray(mark_img, dtype=np.float32)[..., None] / 255.0
        if mark == "dark-marked":
            tone = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.6), rng.uniform(0.05, 0.22))
        else:
            tone = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.25), rng.uniform(0.9, 1.0))
        out = out * (1 - mark_alpha) + tone * mark_alpha
    out = out * rng.uniform(0.8, 1.15) + rng.normal(0, rng.uniform(1, 6), size=out.shape)
    return out.clip(0, 255).astype(np.uint8)


def source_batch(rng: np.random.Generator, batch_size: int,
                 size: int = DEFAULT_IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """A fresh batch: images (batch_size, 3, size, size), ImageNet-normalised, and labels
    (batch_size, n_attributes), one index per attribute of ``SOURCE_ATTRIBUTES``."""
    labels = np.stack([rng.integers(0, len(v), size=batch_size) for v in SOURCE_ATTRIBUTES.values()], 1)
    imgs = np.stack([render_source_image(tuple(int(i) for i in row), rng, size) for row in labels])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.from_numpy(labels).long()


def source_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over attributes of the cross-entropy of each attribute's block of ``fc`` outputs.

    logits: (N, len(source_task_classes())), labels: (N, n_attributes) -> scalar.
    """
    return sum(nn.functional.cross_entropy(logits[:, s], labels[:, k]) for k, s in enumerate(_attribute_slices()))


def source_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy per attribute. logits: (N, len(source_task_classes())), labels: (N, n_attributes)."""
    return {attr: (logits[:, s].argmax(1) == labels[:, k]).float().mean().item()
            for k, (attr, s) in enumerate(zip(SOURCE_ATTRIBUTES, _attribute_slices()))}


def pretrain_on_source(model: nn.Module, steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
                       image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0, progress: bool = True) -> dict[str, float]:
    """Train ``model`` (fc already sized to the source outputs) in place; return held-out accuracy per attribute.

    Every step draws new images, so there is no epoch and nothing to overfit. Small batches
    and one-cycle AdamW get the most out of a budget of a few CPU minutes: it is the number
    of updates, more than the number of images, that the features need.
    """
    rng = np.random.default_rng([seed, 1])
    torch.manual_seed(seed)
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=max(steps, 2), pct_start=0.25)
    model.train()
    bar = progress_bar(range(steps), progress, "pretraining on synthetic shapes")
    for _ in bar:
        x, y = source_batch(rng, batch_size, image_size)
        loss = source_loss(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss.item():.2f}", refresh=False)
    model.eval()
    x, y = source_batch(np.random.default_rng([seed, 2]), 256, image_size)
    with torch.no_grad():
        return source_accuracy(model(x), y)


# ---------------------------------------------------------------------------------------------
# the backbone


def course_pretrained_path(arch: str = "resnet18", steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
                           image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0) -> Path:
    """Where course_lib caches its own source-task pretraining of ``arch`` with these settings.

    The settings are part of the name so that the quick ``ci`` pretraining and the longer
    ``cpu`` one live side by side instead of replacing each other.
    """
    tag = f"v{SOURCE_VERSION}_{steps}x{batch_size}_{image_size}px_seed{seed}"
    return config.data_root() / "weights" / f"{arch}_course_pretrained_{tag}.pth"


def pretrained_resnet(arch: str = "resnet18", progress: bool = True, *, source: str = "auto",
                      steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
                      image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0) -> nn.Module:
    """A torchvision ``arch`` with pretrained weights, in eval mode, never downloading anything.

    ``source="auto"`` uses torchvision's ImageNet weights when they are already in the torch
    hub cache (``fc``: 1000 classes), else course_lib's pretraining on the synthetic source
    task (``fc``: ``len(source_task_classes())`` outputs), made once with ``steps`` batches of
    ``batch_size`` images of ``image_size`` px and then loaded from ``course_pretrained_path``.
    ``source="course"`` skips the ImageNet check (same result on every machine). Either way
    the model takes (N, 3, H, W) ImageNet-normalised images and returns (N, fc.out_features).
    Prints one line saying which weights it returns.
    """
    from torchvision import models

    if arch not in _RESNETS:
        raise ValueError(f"arch must be one of {', '.join(_RESNETS)}, not {arch!r}.")
    if source not in ("auto", "course"):
        raise ValueError(f"source must be 'auto' or 'course', not {source!r}.")
    hub_file = imagenet_weights_cached(arch) if source == "auto" else None
    if hub_file is not None:
        model = getattr(models, arch)()
        model.load_state_dict(torch.load(hub_file, map_location="cpu", weights_only=True))
        print(f"backbone: {arch} with torchvision's ImageNet weights from the hub cache ({hub_file})")
        return model.eval()

    classes = source_task_classes()
    model = getattr(models, arch)(num_classes=len(classes))
    meta = {"arch": arch, "source_version": SOURCE_VERSION, "steps": steps, "batch_size": batch_size,
            "image_size": image_size, "seed": seed}
    cache = course_pretrained_path(arch, steps, batch_size, image_size, seed)
    saved = _load_cache(cache)
    if saved is not None and saved.get("meta") == meta:
        model.load_state_dict(saved["state_dict"])
        print(f"backbone: {arch} pretrained by course_lib on its synthetic shapes task "
              f"({_describe(saved['source_accuracy'])}), loaded from {cache}")
        return model.eval()

    why = "no ImageNet weights in the torch hub cache" if source == "auto" else "source='course'"
    print(f"backbone: {why}, so pretraining {arch} on course_lib's synthetic shapes task instead "
          f"(shape, colour, texture and mark of one object; not flowers), {steps} steps, "
          f"a few minutes on a laptop CPU, cached at {cache}")
    start = time.perf_counter()
    acc = pretrain_on_source(model, steps=steps, batch_size=batch_size, image_size=image_size, seed=seed,
                             progress=progress)
    model = model.to(memory_format=torch.contiguous_format)
    save_atomic({"meta": meta, "classes": classes, "source_accuracy": acc,
                 "seconds": time.perf_counter() - start, "state_dict": model.state_dict()}, cache)
    print(f"backbone: pretrained in {time.perf_counter() - start:.0f} s ({_describe(acc)})")
    return model.eval()


def fastai_arch(arch: str = "resnet18", **pretrain) -> "Callable[..., nn.Module]":
    """An architecture for fastai's ``vision_learner`` that loads :func:`pretrained_resnet` when ``pretrained=True``.

    fastai looks an architecture up in its ``model_meta`` table to know where to cut the body,
    how to split it into parameter groups and which statistics to normalise with. The function
    returned here is registered with the same entry as torchvision's ``arch`` (minus the download),
    so ``vision_learner(dls, fastai_arch(), pretrained=True)`` behaves exactly like
    ``vision_learner(dls, resnet18)`` on a machine that can download. ``pretrain`` is passed on
    (``steps``, ``batch_size``, ``image_size``, ``seed``).
    """
    from fastai.vision.learner import model_meta
    from torchvision import models

    def build(pretrained: bool = True, **kwargs) -> nn.Module:
        if pretrained:
            return pretrained_resnet(arch, progress=True, **pretrain)
        return getattr(models, arch)()

    build.__name__ = f"course_{arch}"
    meta = dict(model_meta[getattr(models, arch)])
    meta.pop("weights", None)  # without it fastai calls build(pretrained=...) instead of asking torchvision
    model_meta[build] = meta
    return build


def _describe(acc: dict[str, float]) -> str:
    return "held-out accuracy " + ", ".join(f"{attr} {a:.0%}" for attr, a in acc.items())


def _load_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt or foreign file is rebuilt, not trusted
        return None


def prepare(profile: str | None = None) -> Path:
    """Make (or find) the profile's pretrained resnet18 ahead of the lessons; returns where it is cached.

    ``python -m course_lib.data`` calls this, so a student's first run of lesson 02 or 03 does not wait for it.
    """
    cached = imagenet_weights_cached("resnet18")
    if cached is not None:
        return cached
    pretrain = pretrain_settings(profile)
    pretrained_resnet("resnet18", progress=True, **pretrain)
    return course_pretrained_path("resnet18", **pretrain)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", choices=_RESNETS)
    parser.add_argument("--source", default="auto", choices=("auto", "course"))
    args = parser.parse_args(argv)
    model = pretrained_resnet(args.arch, source=args.source)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"backbone: {args.arch}, {n_params / 1e6:.1f} M parameters, "
          f"fc {model.fc.in_features} -> {model.fc.out_features}")


if __name__ == "__main__":
    main()
