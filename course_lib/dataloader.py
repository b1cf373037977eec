"""From Dataset and DataLoader to fastai's DataBlock: how images become batches.

Reference implementations for lesson 01_dataloader (``get_x``, ``get_y``, ``splitter``,
``ImageListDataset``, ``collate``, ``denormalize`` and the capstone ``make_dataloaders``), plus what
the lesson uses around them: settings per profile, the torchvision training and validation
pipelines, the pipeline steps of the augmentation explorer (each student's own training pipeline,
and the rule a validation pipeline must follow, which grades the explorer's recorded answer), and a
small measurement of data-loading throughput against the number of DataLoader workers.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from course_lib.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    profile_settings,
    progress_bar,
    read_pascal_csv,  # noqa: F401 - the lesson reads train.csv with dataloader.read_pascal_csv
    student_seed,
)

# Sizes per profile. Nothing is trained in this lesson; the sizes set how many images the
# batch pictures and the throughput measurement decode. `throughput_images` is per worker count:
# enough that worker start-up (a fraction of a second) does not dominate on the cpu profile.
PROFILE_SETTINGS: dict[str, dict] = {
    "ci": dict(size=64, batch_size=8, num_workers=0, throughput_images=32, throughput_workers=(0, 1, 2)),
    "cpu": dict(size=128, batch_size=16, num_workers=0, throughput_images=384, throughput_workers=(0, 1, 2)),
    "gpu": dict(size=224, batch_size=64, num_workers=4, throughput_images=1024, throughput_workers=(0, 1, 2, 4)),
}

settings = profile_settings(PROFILE_SETTINGS, "data-loading")


# ----------------------------------------------------------------------------- exercises: fastai

def get_x(row, path: Path) -> Path:
    """The full path of a ``train.csv`` row's image: ``path / "train" / row["fname"]``.

    ``row`` is one row of the DataFrame (a pandas Series with ``fname``, ``labels``, ``is_valid``);
    ``path`` the dataset folder. In a DataBlock use ``partial(get_x, path=path)``.
    """
    return Path(path) / "train" / row["fname"]


def get_y(row) -> list:
    """The labels of a ``train.csv`` row as a list of class names: ``"dog person"`` -> ``["dog", "person"]``.

    Annotated ``-> list``, not ``list[str]``: fastai reads a get_y's return annotation as a type to cast to.
    """
    return row["labels"].split(" ")


def splitter(df) -> tuple[list[int], list[int]]:
    """``(train, valid)``: the row positions (0..len(df)-1) where ``is_valid`` is False, and where it is True.

    Positions, not ``df.index`` labels: fastai picks the rows with ``iloc``, and after a filter or a
    sort the index labels are no longer ``0..n-1``.
    """
    valid = df["is_valid"].to_numpy(bool)
    return np.flatnonzero(~valid).tolist(), np.flatnonzero(valid).tolist()


# ----------------------------------------------------------------------------- exercises: PyTorch

class ImageListDataset(Dataset):
    """A map-style Dataset over ``items``, a list of ``(image file, label)`` pairs.

    ``len(ds)`` is the number of pairs; ``ds[i]`` opens file ``i`` as an RGB PIL image, applies
    ``transform`` to it when one is given (usually giving a float tensor ``[3, H, W]``) and returns
    ``(image, label)``; the label is passed through unchanged.
    """

    def __init__(self, items: Sequence[tuple[Path | str, Any]], transform: Callable | None = None) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        from PIL import Image

        file, label = self.items[i]
        # convert("RGB"): grayscale and palette files would otherwise give 1 channel, not 3.
        with Image.open(file) as im:
            img = im.convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, label


def collate(items: Sequence[tuple[Tensor, Any]]) -> tuple[Tensor, Tensor]:
    """Stack ``B`` items ``(image [C,H,W], target)`` into ``(xb [B,C,H,W], yb)``.

    Targets are integer class indices (``yb``: int64 ``[B]``) or tensors of one shape ``[...]``
    (``yb``: ``[B, ...]``), as ``torch.utils.data.default_collate`` makes them.
    """
    xb = torch.stack([x for x, _ in items])
    yb = torch.stack([torch.as_tensor(y) for _, y in items])
    return xb, yb


def denormalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Undo ``Normalize(mean, std)`` and put channels last, for ``imshow``.

    ``x``: one image ``[3, H, W]`` or a batch ``[B, 3, H, W]``, normalised. Returns ``[H, W, 3]`` or
    ``[B, H, W, 3]``: ``x * std + mean`` per channel, clamped to ``0..1``, on ``x``'s device and dtype.
    """
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    # contiguous: imshow and .numpy() get the pixels in the order they show them.
    return (x * s + m).clamp(0, 1).movedim(-3, -1).contiguous()


# ----------------------------------------------------------------------------- capstone

def make_dataloaders(path: Path, size: int = 64, batch_size: int = 16) -> tuple[Any, Any]:
    """``(train_dl, valid_dl)`` for a dataset folder in the flowers layout: ``path/train/<class>/<image>`` and
    ``path/valid/<class>/<image>``, images of any size and shape.

    The classes are the training folder names sorted as strings (ImageFolder's order), the labels of both
    parts index that list. Each batch is ``(xb, yb)``: ``xb`` float32 ``[B, 3, size, size]`` normalised with
    the ImageNet statistics, ``yb`` int64 ``[B]``, ``B = batch_size`` but for an epoch's last batch. Training
    batches are shuffled and augmented (``train_transforms``); validation batches come in a fixed order,
    without anything random (``valid_transforms``), so two passes give the same tensors. Loads in this
    process (``num_workers=0``).
    """
    from torch.utils.data import DataLoader

    path = Path(path)
    train_items, classes = folder_items(path / "train")
    # The validation labels index the *training* vocabulary, whatever folders the valid part happens to hold.
    index = {c: i for i, c in enumerate(classes)}
    valid_items = [(f, index[f.parent.name]) for f, _ in folder_items(path / "valid")[0]]
    train_ds = ImageListDataset(train_items, transform=train_transforms(size))
    valid_ds = ImageListDataset(valid_items, transform=valid_transforms(size))
    return (DataLoader(train_ds, batch_size=batch_size, shuffle=True, collate_fn=collate),
            DataLoader(valid_ds, batch_size=batch_size, shuffle=False, collate_fn=collate))


# ----------------------------------------------------------------------------- data helpers

def folder_items(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(items, classes)`` of an ImageFolder-style folder ``root/<class>/<image>``.

    ``classes`` are the folder names sorted as strings (as ImageFolder sorts them) and each item
    is ``(file, index into classes)``, in ImageFolder's order.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: build the data with course_lib.data.flowers.get_flowers().")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    exts = {".jpg", ".jpeg", ".png"}
    items = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.suffix.lower() in exts]
    return items, classes


def train_transforms(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Training pipeline: random crop of 35-100 % of the image, flips, a small rotation, colour jitter."""
    import torchvision.transforms as T

    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.35, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomRotation(15),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def valid_transforms(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Validation pipeline: nothing random; the same size and statistics as training."""
    import torchvision.transforms as T

    return T.Compose([T.Resize(resize_size(size)), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])


def resize_size(size: int) -> int:
    """The classic 256-for-224 margin: resize the short side to ``size * 8/7``, then centre-crop ``size``."""
    return int(round(size * 8 / 7))


def show_images(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 4, size: float = 2.2, axes=None):
    """A grid of images (HWC arrays or tensors in 0..1, or PIL images); returns the axes array."""
    import matplotlib.pyplot as plt

    n = len(images)
    if axes is None:
        nrows = max(1, -(-n // ncols))
        _, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    flat = np.asarray(axes).reshape(-1)
    for i, ax in enumerate(flat):
        ax.axis("off")
        if i < n:
            img = images[i]
            if isinstance(img, Tensor):
                img = img.detach().cpu().numpy()
            ax.imshow(img)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=9)
    return axes


# ----------------------------------------------------------------------------- the augmentation explorer

# Every step the explorer offers, in the order a pipeline applies them: sizes first, then the steps that prepare
# every image the same way, then the random ones, then the conversion to a normalised tensor.
PIPELINE_STEPS: tuple[str, ...] = ("RandomResizedCrop", "Resize", "CenterCrop", "Grayscale", "Autocontrast",
                                   "Equalize", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotation",
                                   "ColorJitter", "RandomGrayscale", "ToTensor", "Normalize")
RANDOM_STEPS: dict[str, str] = {
    "RandomResizedCrop": "crops a random part of the image at a random scale",
    "RandomHorizontalFlip": "flips half of the images left to right",
    "RandomVerticalFlip": "turns some images upside down",
    "RandomRotation": "rotates each image by a random angle",
    "ColorJitter": "changes brightness, contrast, saturation and hue at random",
    "RandomGrayscale": "turns some images grey",
}
# Steps that change every image, always in the same way: part of what the model learned on, not augmentation.
PREPARATION_STEPS: dict[str, str] = {
    "Grayscale": "turns every image grey",
    "Autocontrast": "stretches every image's contrast to the full range",
    "Equalize": "spreads every image's brightness evenly over the range",
}
EXPLORER_SIZE = 96  # the training size in the explorer; Resize goes to resize_size(EXPLORER_SIZE)


def explorer_training_steps(student: str) -> tuple[str, ...]:
    """The training pipeline the augmentation explorer gives ``student``, in ``PIPELINE_STEPS`` order.

    Drawn from ``student_seed(student, "valid_pipeline")``: a random crop and a flip, one or two more random
    steps, and one to three steps of ``PREPARATION_STEPS`` (so two students' right validation pipelines usually
    differ), then ``ToTensor`` and ``Normalize``. The grader draws the same pipeline from the student's id alone.
    """
    rng = np.random.default_rng(student_seed(student, "valid_pipeline"))
    prep = list(PREPARATION_STEPS)
    chosen = {str(s) for s in rng.choice(prep, size=int(rng.integers(1, len(prep) + 1)), replace=False)}
    extra = ["RandomRotation", "ColorJitter", "RandomVerticalFlip"] + ([] if "Grayscale" in chosen
                                                                       else ["RandomGrayscale"])
    chosen |= {str(s) for s in rng.choice(extra, size=int(rng.integers(1, 3)), replace=False)}
    chosen |= {"RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"}
    return tuple(s for s in PIPELINE_STEPS if s in chosen)


def build_pipeline(steps: Sequence[str], size: int = EXPLORER_SIZE, params: dict | None = None,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A torchvision ``Compose`` of the named ``steps`` (a subset of ``PIPELINE_STEPS``), in canonical order.

    ``params`` tunes the random steps: ``min_scale``, ``flip_p``, ``vflip_p``, ``degrees``,
    ``jitter`` (brightness/contrast/saturation), ``hue``, ``gray_p``.
    """
    import torchvision.transforms as T

    unknown = [s for s in steps if s not in PIPELINE_STEPS]
    if unknown:
        raise ValueError(f"unknown pipeline steps {unknown}: choose from {', '.join(PIPELINE_STEPS)}")
    p = dict(min_scale=0.35, flip_p=0.5, vflip_p=0.5, degrees=15.0, jitter=0.3, hue=0.05, gray_p=0.2)
    p.update(params or {})
    make = {
        "RandomResizedCrop": lambda: T.RandomResizedCrop(size, scale=(p["min_scale"], 1.0)),
        "Resize": lambda: T.Resize(resize_size(size)),
        "CenterCrop": lambda: T.CenterCrop(size),
        "Grayscale": lambda: T.Grayscale(num_output_channels=3),
        # p=1: torchvision names them Random*, but applied to every image they are deterministic.
        "Autocontrast": lambda: T.RandomAutocontrast(p=1.0),
        "Equalize": lambda: T.RandomEqualize(p=1.0),
        "RandomHorizontalFlip": lambda: T.RandomHorizontalFlip(p["flip_p"]),
        "RandomVerticalFlip": lambda: T.RandomVerticalFlip(p["vflip_p"]),
        "RandomRotation": lambda: T.RandomRotation(p["degrees"]),
        "ColorJitter": lambda: T.ColorJitter(p["jitter"], p["jitter"], p["jitter"], p["hue"]),
        "RandomGrayscale": lambda: T.RandomGrayscale(p["gray_p"]),
        "ToTensor": lambda: T.ToTensor(),
        "Normalize": lambda: T.Normalize(mean, std),
    }
    return T.Compose([make[s]() for s in PIPELINE_STEPS if s in steps])


def validation_pipeline_problems(steps: Sequence[str], train_steps: Sequence[str] | None = None) -> list[str]:
    """Why ``steps`` would be a wrong validation pipeline for the training pipeline ``train_steps`` (empty: right).

    A validation pipeline must be deterministic (no random step), give the training size at the
    training scale (Resize, then CenterCrop), prepare every image as training does (each step of
    ``PREPARATION_STEPS`` that ``train_steps`` has, and none it lacks) and feed the model what it was
    trained on: a tensor (ToTensor) normalised with the training statistics (Normalize). Without
    ``train_steps`` only the rules that hold for any training pipeline are checked.
    """
    if isinstance(steps, str) or not all(isinstance(s, str) for s in steps):
        return ["record a tuple of step names, e.g. ('ToTensor', 'Normalize')"]
    unknown = [s for s in steps if s not in PIPELINE_STEPS]
    if unknown:
        return [f"{', '.join(map(repr, unknown))} is not a step of the explorer ({', '.join(PIPELINE_STEPS)})"]
    out = [f"{s} {why}: validation must measure the same images every time, so leave it out"
           for s, why in RANDOM_STEPS.items() if s in steps]
    if "CenterCrop" not in steps:
        out.append("without CenterCrop the images do not come out at the training size (a batch needs one size, "
                   "and the model learned at that size)")
    elif "Resize" not in steps:
        out.append("CenterCrop alone cuts a window out of the photo at whatever size it has: Resize first, so the "
                   "objects appear at about the scale the training crops showed")
    if train_steps is not None:
        for s, why in PREPARATION_STEPS.items():
            if s in train_steps and s not in steps:
                out.append(f"your training pipeline {why} ({s}): the model only ever saw images prepared so, "
                           "and validation must show it the same kind")
            elif s in steps and s not in train_steps:
                out.append(f"{s} {why}, but your training pipeline does not: the model never saw images "
                           "prepared so")
    if "ToTensor" not in steps:
        out.append("the model takes tensors: keep ToTensor")
    if "Normalize" not in steps:
        out.append("the model was trained on normalised inputs: Normalize with the same mean and std as training")
    return out


# ----------------------------------------------------------------------------- throughput

def measure_throughput(dataset: Dataset, batch_size: int, workers: Sequence[int] = (0, 1, 2),
                       n_images: int | None = None, collate_fn: Callable | None = None,
                       progress: bool = True) -> list[dict]:
    """Images per second that a DataLoader delivers from ``dataset`` for each number of ``workers``.

    Reads ``n_images`` images (default: the whole dataset, at least one batch) per worker count and
    counts the time from creating the iterator (so worker start-up is included, as in every epoch)
    to the last batch. The image files are read once beforehand, so that every count finds them in
    the operating system's cache. Returns one dict per count: ``workers``, ``images``, ``seconds``, ``per_second``.
    """
    from torch.utils.data import DataLoader, Subset

    n = len(dataset) if n_images is None else min(int(n_images), len(dataset))
    n = max(n, min(batch_size, len(dataset)))
    subset = Subset(dataset, range(n))
    # Read the files once first, so that the first worker count does not pay alone for a cold disk cache.
    for item in getattr(dataset, "items", [])[:n]:
        file = item[0] if isinstance(item, (tuple, list)) else item
        if isinstance(file, (str, Path)) and Path(file).is_file():
            Path(file).read_bytes()
    results = []
    bar = progress_bar(None, progress, "loading images", total=n * len(workers), unit="img")
    for w in workers:
        dl = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=int(w),
                        collate_fn=collate_fn or collate)
        start = time.perf_counter()
        seen = 0
        for xb, _ in dl:
            seen += len(xb)
            if bar is not None:
                bar.update(len(xb))
        sec = time.perf_counter() - start
        results.append(dict(workers=int(w), images=seen, seconds=sec,
                            per_second=seen / sec if sec > 0 else float("inf")))
    if bar is not None:
        bar.close()
    return results


def plot_throughput(results: Sequence[dict], ax=None):
    """A bar per worker count: images per second. Returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    labels = [str(r["workers"]) for r in results]
    rates = [r["per_second"] for r in results]
    bars = ax.bar(labels, rates, color="C0")
    for b, r in zip(bars, rates):
        ax.annotate(f"{r:.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=9)
    ax.set_xlabel("num_workers")
    ax.set_ylabel("images per second")
    ax.set_ylim(0, max(rates) * 1.18 if rates else 1)
    return ax
