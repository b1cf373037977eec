"""The basics every lesson uses, defined once: ImageNet statistics, settings per profile, the
offline check for ImageNet weights, atomic saves, the PASCAL and BIWI readers, progress bars.

Each lesson's module (``course_lib.fill_level``, ``course_lib.transfer``, ...) imports what it
needs from here, so ``fill_level.IMAGENET_MEAN`` or ``dataloader.read_pascal_csv`` keep working
in the notebooks; each docstring names the lesson that introduces the idea. Importing this module
stays cheap (no torch, pandas or tqdm until a function needs them): the data makers and the
grader's own process import it too.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable, Iterable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel mean of ImageNet's training images (RGB, pixels in 0..1): ``Normalize(IMAGENET_MEAN, IMAGENET_STD)``.

Introduced in lesson 01_dataloader (the ``Normalize`` step); every lesson normalises with it, because
pretrained networks were trained on inputs normalised so, and course_lib's own pretraining follows suit.
"""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of ImageNet's training images; see :data:`IMAGENET_MEAN`."""


# ----------------------------------------------------------------------------- who the student is

OFFLINE_STUDENT = "offline"


NBGRADER_STEPS = ("autograded", "submitted")


def student_id() -> str:
    """Who is working: ``COURSE_STUDENT`` (a student off a hub sets it to the id their instructor uses), then
    nbgrader's student id when nbgrader grades (it runs a notebook in ``autograded/<student>/<assignment>/``),
    then ``JUPYTERHUB_USER`` on a hub, else ``"offline"``.

    Introduced in lesson 01_dataloader: each graded widget draws its target from it, so two students'
    right answers differ, and the grader judges an answer against the target of the student who handed it in.
    """
    own = os.environ.get("COURSE_STUDENT", "").strip()
    if own:
        return own
    try:
        here = Path.cwd()
    except OSError:  # a working folder removed under the process
        here = Path("/")
    if here.parent.parent.name in NBGRADER_STEPS and here.parent.name:
        return here.parent.name
    return os.environ.get("JUPYTERHUB_USER", "").strip() or OFFLINE_STUDENT


def student_seed(student: str, exercise: str) -> int:
    """A number fixed by a student and an exercise (not Python's salted ``hash``): the seed of their target."""
    import zlib

    return zlib.crc32(f"{exercise}\0{student}".encode())


# ----------------------------------------------------------------------------- settings per profile

def profile_settings(table: dict[str, dict], what: str) -> Callable[..., dict]:
    """A lesson's ``settings(profile=None)``: a fresh copy of ``table[profile]``.

    Introduced in lesson 01_dataloader (``S = dataloader.settings()``). ``table`` maps each of
    ``config.PROFILES`` to the lesson's sizes; ``profile`` defaults to the one ``setup()`` chose.
    The copy is deep, so a notebook that edits ``S`` (or a nested dict in it) never changes the table.
    """

    def settings(profile: str | None = None) -> dict:
        from course_lib.config import current

        return copy.deepcopy(table[profile or current().profile])

    settings.__doc__ = f"The {what} settings of ``profile`` (default: the one ``setup()`` chose)."
    return settings


# ----------------------------------------------------------------------------- ImageNet weights, offline

def imagenet_weights_path(arch: str = "resnet18") -> Path:
    """Where torchvision caches the default ImageNet weights of ``arch``; the file may not exist.

    Introduced in lesson 02_transfer_learning: the course runs without internet, so weights are
    used only when they are already in the torch hub cache, never downloaded.
    """
    import torch
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def imagenet_weights_cached(arch: str = "resnet18") -> Path | None:
    """The file of ``arch``'s ImageNet weights when it is in the torch hub cache, else None. Never downloads.

    The one way course_lib asks "are ImageNet weights here?" (lesson 02_transfer_learning).
    """
    path = imagenet_weights_path(arch)
    return path if path.is_file() else None


def learner_pretrained(arch: str | Callable, quiet: bool = False) -> bool:
    """Whether ImageNet weights for ``arch`` (a name or a torchvision builder) are cached; says which in one line.

    ``vision_learner(..., pretrained=True)`` would try to download them and fail offline; pass
    ``pretrained=learner_pretrained(arch)`` instead (lesson 03_multilabel introduces it).
    """
    name = arch if isinstance(arch, str) else arch.__name__
    found = imagenet_weights_cached(name) is not None
    if not quiet:
        print(f"{name}: " + ("cached ImageNet weights found, so pretrained=True." if found else
                             "no ImageNet weights in the torch cache and no internet, so pretrained=False "
                             "(random weights)."))
    return found


# ----------------------------------------------------------------------------- files

def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` so that a crash or a full disk mid-save leaves the previous file intact.

    Introduced in lesson 02_transfer_learning (saving the best weights). Writes a temporary file next
    to ``path`` (named with this process's id, so two processes never share one), flushes it to disk
    and renames it over ``path``; on any failure the temporary file is removed and the error raised.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        # Without the fsync a power cut after the rename can leave an empty file under the old name.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_pascal_csv(path: str | Path):
    """``train.csv`` of a pascal_2007 folder as a DataFrame (``fname``, ``labels``, ``is_valid`` as bool).

    Introduced in lesson 01_dataloader; lesson 03_multilabel trains on it.
    """
    import pandas as pd

    df = pd.read_csv(Path(path) / "train.csv")
    df["is_valid"] = df["is_valid"].astype(bool)
    return df


def read_cal(path: str | Path):
    """The ``(3, 3)`` intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` of a BIWI ``rgb.cal``/``depth.cal``.

    Read the way fastbook does (lesson 04_keypoints): the first three lines; ``skip_footer=6`` drops
    the distortion line, the 3x3 extrinsic rotation, the translation and the image size (blank lines
    do not count).
    """
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass the rgb.cal of a BIWI folder, e.g. path/'01'/'rgb.cal'.")
    return np.genfromtxt(path, skip_footer=6)


# ----------------------------------------------------------------------------- progress

def progress_bar(iterable: Iterable | None, show: bool, desc: str = "", **kwargs):
    """``iterable`` wrapped in tqdm's bar (the notebook's when in Jupyter) when ``show``, else ``iterable`` itself.

    With ``iterable=None`` and ``total=...`` it is a bar to ``update()`` by hand, or None when not
    shown. The bar disappears when done unless ``leave=True``. (Not called ``progress``: the
    functions that use it take a ``progress: bool`` argument, which would hide it.)
    """
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, **{"leave": False, **kwargs})
