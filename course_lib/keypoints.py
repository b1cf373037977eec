"""Keypoint regression: predicting where the head centre is in a BIWI head-pose frame.

Reference implementations for lesson 04_keypoints, plus the pieces the lesson uses once the
student has written them: the person-held-out splitter, the DataBlock with ``PointBlock``, a
fastai learner that works offline, the error in pixels, and the fixed challenge of the
augmentation explorer (where a keypoint lands after flip, warp, rotate and zoom), whose
answer every machine recomputes exactly, so a recorded prediction can be graded headless.

Coordinates follow fastai: a point is ``[col, row]`` (x first, like PIL's ``(width, height)``),
in pixels of the original frame, and ``PointBlock`` rescales it to ``[-1, 1]`` on each axis.
"""
from __future__ import annotations

import math
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from course_lib.common import learner_pretrained, profile_settings, read_cal

# The BIWI frames are 640 x 480; errors are reported in pixels of this size.
FRAME_SIZE: tuple[int, int] = (640, 480)  # (width, height), as PIL's Image.size
# fastbook holds out this recording: a person that appears in no other folder.
VALID_FOLDER = "13"

# Sizes per profile. `size` is (height, width), as fastai's aug_transforms takes it; `item_size` is what PIL
# shrinks each frame to first (see the lesson: less aliasing, cheaper batches). `ci` proves the notebook runs.
# `cpu`, from random weights with the heat-map head at stride 4, measured with benchmarks/keypoints_cpu.py on an
# idle 2-core machine: 5.4 px mean error on the held-out person (folder 13) in 172 s of loading and training
# (the issue's target: 8 px in 4 minutes); holding out folder 05's person instead, 7.4 px in 167 s. The whole
# lesson from fresh data took 175 s. Before the shifts, the stride-4 cut and the PIL resize, the same recipe
# reached only 11-12 px in 5 epochs, and its training frames were no better: it underfitted.
# fastbook's pooled head with y_range reached only ~90 px after 4 epochs at 64x48 from random weights.
PROFILE_SETTINGS: dict[str, dict] = {
    "ci": dict(size=(48, 64), item_size=(60, 80), batch_size=16, epochs=1, lr=3e-3, lr_find_iters=40,
               num_workers=0, arch="resnet18", head="heatmap", max_rotate=10.0, max_warp=0.2),
    "cpu": dict(size=(96, 128), item_size=(120, 160), batch_size=16, epochs=8, lr=3e-3, lr_find_iters=50,
                num_workers=0, arch="resnet18", head="heatmap", max_rotate=10.0, max_warp=0.2),
    "gpu": dict(size=(240, 320), item_size=(300, 400), batch_size=64, epochs=8, lr=3e-3, lr_find_iters=100,
                num_workers=4, arch="resnet18", head="heatmap", max_rotate=10.0, max_warp=0.2),
}

settings = profile_settings(PROFILE_SETTINGS, "keypoint training")


# ----------------------------------------------------------------------------- exercises

def img2pose(img_file: Path | str) -> Path:
    """The pose file beside an image: ``.../13/frame_00003_rgb.jpg`` -> ``.../13/frame_00003_pose.txt``.

    Only the file name changes (``rgb.jpg`` -> ``pose.txt``); the folders stay, even when their
    names contain ``rgb``. Returns a ``pathlib.Path``.
    """
    return Path(f"{str(img_file)[:-7]}pose.txt")


def get_ctr(img_file: Path | str, cal: np.ndarray) -> Tensor:
    """The head centre of ``img_file`` in pixels: a float32 tensor ``[2]`` holding ``[col, row]``.

    Reads the translation ``(x, y, z)`` in mm (the pose file's last line) and projects it with the
    ``(3, 3)`` intrinsics ``cal = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``:
    ``col = x * fx / z + cx`` and ``row = y * fy / z + cy``.
    """
    ctr = np.genfromtxt(img2pose(img_file), skip_header=3)
    col = ctr[0] * cal[0][0] / ctr[2] + cal[0][2]
    row = ctr[1] * cal[1][1] / ctr[2] + cal[1][2]
    return torch.tensor([col, row], dtype=torch.float32)


def sigmoid_range(x: Tensor, lo: float, hi: float) -> Tensor:
    """``sigmoid(x)`` stretched from ``(0, 1)`` to ``(lo, hi)``; same shape, dtype and device as ``x``.

    What fastai's ``y_range=(lo, hi)`` puts after a model's last layer.
    """
    return torch.sigmoid(x) * (hi - lo) + lo


def to_unit_points(points: Tensor, size: Sequence[float]) -> Tensor:
    """Pixel points ``[..., 2]`` (``[col, row]``) -> fastai's ``[-1, 1]`` coordinates, same shape.

    ``size`` is the image's ``(width, height)``, as PIL's ``Image.size``: column ``0`` maps to
    ``-1`` and column ``width`` to ``1`` (likewise rows with ``height``), as ``PointScaler`` does.
    """
    sz = torch.as_tensor(size, dtype=points.dtype, device=points.device)
    return points * 2 / sz - 1


def from_unit_points(points: Tensor, size: Sequence[float]) -> Tensor:
    """fastai's ``[-1, 1]`` points ``[..., 2]`` -> pixels ``[col, row]`` of a ``(width, height)`` image.

    The inverse of :func:`to_unit_points`; same shape, dtype and device as ``points``.
    """
    sz = torch.as_tensor(size, dtype=points.dtype, device=points.device)
    return (points + 1) * sz / 2


# ----------------------------------------------------------------------------- data


def read_cal_parts(path: Path | str) -> dict[str, np.ndarray]:
    """Every part of an ``rgb.cal``: ``intrinsics`` (3,3), ``distortion`` (4 or 5,), ``rotation`` (3,3),
    ``translation`` (3,) and ``size`` (2,) = (width, height)."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    num = [np.array(r, dtype=float) for r in rows]
    return {"intrinsics": np.stack(num[0:3]), "distortion": num[3], "rotation": np.stack(num[4:7]),
            "translation": num[7], "size": num[8]}


def is_held_out(img_file: Path | str, folder: str = VALID_FOLDER) -> bool:
    """True when ``img_file`` shows the person recorded in ``folder``, in any of their recordings.

    Splitting by person, not by frame: frames of one recording are near-duplicates, so a random
    split would grade the model on faces (and rooms) it has already seen.
    """
    from course_lib.data.biwi import FOLDERS, person_of

    name = Path(img_file).parent.name
    if name not in FOLDERS:
        return name == folder
    return person_of(name) == person_of(folder)


def person_splitter(folder: str = VALID_FOLDER) -> Callable:
    """A fastai splitter that puts every frame of ``folder``'s person in the validation set."""
    from fastai.data.transforms import FuncSplitter

    return FuncSplitter(partial(is_held_out, folder=folder))


def biwi_datablock(path: Path, s: dict, cal: np.ndarray | None = None, folder: str = VALID_FOLDER):
    """The lesson's DataBlock: image file -> image ``[3, *s['size']]``, head centre -> point ``[1, 2]``.

    ``PointBlock`` makes the target a point, so every augmentation moves it with the image, and
    scales it to ``[-1, 1]``. The frames are resized on the batch (``aug_transforms(size=...)``).
    """
    from fastai.data.block import DataBlock
    from fastai.data.transforms import get_image_files
    from fastai.vision.augment import Resize, aug_transforms
    from fastai.vision.data import ImageBlock, PointBlock

    if cal is None:
        cal = read_cal(Path(path) / "01" / "rgb.cal")
    return DataBlock(
        blocks=(ImageBlock, PointBlock),
        get_items=get_image_files,
        get_y=partial(get_ctr, cal=cal),
        splitter=person_splitter(folder),
        item_tfms=[Resize(tuple(s["item_size"]))] if s.get("item_size") else None,
        batch_tfms=aug_transforms(size=tuple(s["size"]), max_rotate=s["max_rotate"], max_warp=s["max_warp"],
                                  max_lighting=s.get("max_lighting", 0.2)),
    )


def biwi_dataloaders(path: Path, s: dict, device=None, folder: str = VALID_FOLDER):
    """DataLoaders of the BIWI folder: images ``[B, 3, *s['size']]`` and points ``[B, 1, 2]`` in [-1, 1]."""
    from course_lib.config import current

    path = Path(path)
    if not (path / "01" / "rgb.cal").exists():
        raise FileNotFoundError(f"{path} is not a BIWI head-pose folder (no 01/rgb.cal): use "
                                "course_lib.data.biwi.get_biwi() to make or find it.")
    return biwi_datablock(path, s, folder=folder).dataloaders(
        path, bs=s["batch_size"], num_workers=s["num_workers"],
        device=device if device is not None else current().device)


# ----------------------------------------------------------------------------- learner and errors


class HeatmapHead(torch.nn.Module):
    """A head that keeps *where*: features ``[B, n_in, h, w]`` -> points ``[B, 2]`` in ``(-1, 1)``.

    It scores every cell of the feature map (a 3x3 conv, then a 1x1 conv to one channel), turns the
    scores into a probability map with a softmax over all ``h*w`` cells, and returns the map's centre
    of mass in fastai's ``[-1, 1]`` coordinates (cell ``j`` of ``w`` has its centre at ``-1 + (2j+1)/w``),
    ``[col, row]`` like the targets. Average pooling, in the usual head, throws the cells' positions
    away; from random weights a network then takes a long time to smuggle them through.

    A cell is coarse (at stride 4, 20 px of a 640x480 frame), so each cell also says where in
    itself the point lies: a shift ``[B, 2, h, w]`` of at most half a cell either way, added to the
    cell's centre before the average (as CenterNet does). It starts at zero, so an untrained head is
    a plain centre of mass.
    """

    def __init__(self, n_in: int, hidden: int = 64):
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Conv2d(n_in, hidden, 3, padding=1), torch.nn.BatchNorm2d(hidden), torch.nn.ReLU())
        self.score = torch.nn.Conv2d(hidden, 1, 1)
        self.shift = torch.nn.Conv2d(hidden, 2, 1)
        torch.nn.init.zeros_(self.shift.weight)
        torch.nn.init.zeros_(self.shift.bias)

    def maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The probability map ``[B, h, w]`` (each sums to 1) and the shifts ``[B, 2, h, w]`` in cells."""
        t = self.trunk(x)
        s = self.score(t)
        b, _, h, w = s.shape
        return s.flatten(1).softmax(dim=1).view(b, h, w), 0.5 * torch.tanh(self.shift(t))

    def heatmap(self, x: Tensor) -> Tensor:
        """The probability map ``[B, h, w]`` (each sums to 1) whose centre of mass is the prediction."""
        return self.maps(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        p, shift = self.maps(x)
        _, h, w = p.shape
        cols = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=p.device, dtype=p.dtype)
        rows = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=p.device, dtype=p.dtype)
        # A cell spans 2/w in [-1, 1] units, so a shift of `d` cells moves its centre by 2d/w.
        col = cols[None, None, :] + shift[:, 0] * (2 / w)
        row = rows[None, :, None] + shift[:, 1] * (2 / h)
        return torch.stack([(p * col).sum(dim=(1, 2)), (p * row).sum(dim=(1, 2))], dim=1)


def make_learner(dls, arch: str | Callable = "resnet18", pretrained: bool | None = None, quiet: bool = False,
                 head: str = "linear", cut: int = -5):
    """A fastai ``vision_learner`` for points, with the default MSE loss and :func:`pixel_error_metric`.

    ``head="linear"``: fastbook's, fastai's pooled head with 2 outputs squashed by ``y_range=(-1, 1)``.
    ``head="heatmap"``: a :class:`HeatmapHead` on the body cut at ``cut`` (-5: after a resnet's first
    stage, stride 4, so the map keeps detail; -4 stops after the second, at stride 8), which learns
    far faster from random weights.
    """
    import fastai.callback.all  # noqa: F401 - patches Learner with fit_one_cycle, lr_find and the progress bar
    import torchvision
    from fastai.vision.learner import vision_learner

    fn = getattr(torchvision.models, arch) if isinstance(arch, str) else arch
    if pretrained is None:
        pretrained = learner_pretrained(fn, quiet=quiet)
    if head == "heatmap":
        from fastai.vision.learner import create_vision_model

        # vision_learner sets up normalisation, the layer groups and freezing, but (fastai 2.8) drops its
        # `cut` argument, so the body it builds is swapped for one cut at `cut`.
        learn = vision_learner(dls, fn, pretrained=pretrained, custom_head=HeatmapHead(body_channels(fn, -2)),
                               metrics=pixel_error_metric)
        learn.model = create_vision_model(fn, 2, pretrained=pretrained, cut=cut,
                                          custom_head=HeatmapHead(body_channels(fn, cut))).to(learn.dls.device)
        # vision_learner's own freeze() built an optimizer over the replaced model's parameters;
        # left in place it would train nothing of the new one.
        learn.opt = None
        if pretrained:
            # Two groups, body and head, whatever the cut: fastai's resnet split assumes an uncut body.
            learn.splitter = lambda m: [list(m[0].parameters()), list(m[1].parameters())]
            learn.freeze()
        return learn
    if head != "linear":
        raise ValueError(f"head must be 'linear' or 'heatmap', not {head!r}")
    return vision_learner(dls, fn, pretrained=pretrained, y_range=(-1, 1), metrics=pixel_error_metric)


def body_channels(arch: Callable, cut: int = -4) -> int:
    """Channels of a torchvision resnet's feature map when its children are cut at ``cut`` (-4: after layer2)."""
    children = list(arch(weights=None).children())[:cut]
    convs = [m for c in children for m in c.modules() if isinstance(m, torch.nn.Conv2d)]
    return convs[-1].out_channels


def pixel_offsets(preds: Tensor, targs: Tensor, size: Sequence[float] = FRAME_SIZE) -> Tensor:
    """Prediction minus target in pixels, ``[N, 2]`` as ``(col, row)``, for points given in ``[-1, 1]``.

    ``preds`` and ``targs`` hold ``N`` points in any shape ending in 2 (``[N, 2]`` from the model,
    ``[N, 1, 2]`` from ``PointBlock``), measured in a ``size = (width, height)`` image.
    """
    p = torch.as_tensor(preds).as_subclass(Tensor).reshape(-1, 2).float()
    t = torch.as_tensor(targs).as_subclass(Tensor).reshape(-1, 2).float().to(p.device)
    return from_unit_points(p, size) - from_unit_points(t, size)


def pixel_errors(preds: Tensor, targs: Tensor, size: Sequence[float] = FRAME_SIZE) -> Tensor:
    """Distance in pixels between predicted and true points given in ``[-1, 1]`` coordinates.

    Shapes as in :func:`pixel_offsets`. Returns a float tensor ``[N]``, measured in a
    ``size = (width, height)`` image.
    """
    return pixel_offsets(preds, targs, size).norm(dim=1)


def pixel_error(preds: Tensor, targs: Tensor, size: Sequence[float] = FRAME_SIZE) -> float:
    """Mean of :func:`pixel_errors`: how far off the prediction is, on average, in a 640x480 frame."""
    return float(pixel_errors(preds, targs, size).mean())


def pixel_error_metric(preds: Tensor, targs: Tensor) -> Tensor:
    """fastai metric: mean distance in pixels of a 640x480 frame, as a 0-d tensor."""
    return pixel_errors(preds, targs).mean()


pixel_error_metric.__name__ = "px_error"


def mse_to_pixels(mse: float, size: Sequence[float] = FRAME_SIZE) -> float:
    """A typical pixel error for an MSE in ``[-1, 1]`` units: ``sqrt(mse)`` scaled by each axis' half size.

    The MSE averages the squared error over both coordinates, so the root-mean-square distance is
    ``sqrt(mse * ((w/2)^2 + (h/2)^2))``.
    """
    w, h = size
    return math.sqrt(mse * ((w / 2) ** 2 + (h / 2) ** 2))


def plot_errors(errors: Tensor, ax=None, bins: int = 30):
    """Histogram of per-frame pixel errors with the mean marked; returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    e = torch.as_tensor(errors).float().cpu().numpy()
    ax.hist(e, bins=bins, color="C0")
    ax.axvline(float(e.mean()), color="C3", label=f"mean {e.mean():.1f} px")
    ax.set_xlabel("distance from the true head centre (px at 640x480)")
    ax.set_ylabel("frames")
    ax.legend(loc="best")
    return ax


def plot_heatmaps(learn, n: int = 3, axes=None):
    """For ``n`` validation images: the image, the :class:`HeatmapHead`'s probability map over it, the
    prediction (red +) and the target (green x). Returns the Axes."""
    import matplotlib.pyplot as plt

    head = learn.model[1]
    if not isinstance(head, HeatmapHead):
        raise TypeError("plot_heatmaps needs a learner whose head is a keypoints.HeatmapHead")
    xb, yb = learn.dls.valid.one_batch()
    xb, yb = xb[:n], yb[:n]
    learn.model.eval()
    with torch.no_grad():
        feats = learn.model[0](xb)
        heat, pred = head.heatmap(feats).cpu(), head(feats).cpu()
    imgs = learn.dls.valid.decode((xb,))[0].as_subclass(Tensor).cpu().float()
    if imgs.max() > 1.5:
        imgs = imgs / 255
    if axes is None:
        _, axes = plt.subplots(1, len(xb), figsize=(3.4 * len(xb), 2.8))
    axes = np.atleast_1d(axes)
    h, w = imgs.shape[-2:]
    for ax, img, m, p, t in zip(axes, imgs, heat, pred, yb.as_subclass(Tensor).cpu().reshape(-1, 2)):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.imshow(m.numpy(), extent=(0, w, h, 0), alpha=0.45, cmap="magma", interpolation="nearest")
        pc, pr = from_unit_points(p, (w, h)).tolist()
        tc, tr = from_unit_points(t, (w, h)).tolist()
        ax.scatter([tc], [tr], c="lime", marker="x", s=70, linewidths=2, label="target")
        ax.scatter([pc], [pr], c="red", marker="+", s=90, linewidths=2, label="prediction")
        ax.axis("off")
    axes[0].legend(loc="lower left", fontsize=7)
    return axes


def show_point(img, point, ax=None, title: str = "", color: str = "C3", marker: str = "+"):
    """Draw ``img`` (a path, PIL image or HxWx3 array) with ``point`` ``[col, row]`` marked; returns the Axes."""
    import matplotlib.pyplot as plt
    from PIL import Image

    if ax is None:
        _, ax = plt.subplots()
    if isinstance(img, (str, Path)):
        img = Image.open(img)
    ax.imshow(np.asarray(img))
    c, r = (float(v) for v in torch.as_tensor(point).reshape(-1)[:2])
    ax.scatter([c], [r], s=160, c=color, marker=marker, linewidths=2)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return ax


# ----------------------------------------------------------------------------- augmentation


def augment(img: Tensor, point: Tensor, flip: bool = False, rotate: float = 0.0, zoom: float = 1.0,
            warp: float = 0.0) -> tuple[Tensor, Tensor]:
    """Apply fastai's own batch augmentations, with fixed parameters, to one image and one point.

    ``img`` is a float image ``[3, H, W]`` in 0..1, ``point`` is ``[col, row]`` in its pixels.
    The transforms are those of ``aug_transforms`` (Flip, Warp with ``draw_x=warp``, Rotate by
    ``rotate`` degrees, Zoom by ``zoom`` about the centre), combined into one resampling as in
    training. Returns ``(image [3, H, W], point [2])``, the point where fastai moves it.
    """
    from fastai.torch_core import TensorImage
    from fastai.vision.augment import Flip, Rotate, Warp, Zoom, setup_aug_tfms
    from fastai.vision.core import TensorPoint

    _, h, w = img.shape
    tfms = []
    if flip:
        tfms.append(Flip(p=1.0))
    if warp:
        tfms.append(Warp(p=1.0, draw_x=float(warp), draw_y=0.0))
    if rotate:
        tfms.append(Rotate(p=1.0, draw=float(rotate)))
    if zoom != 1.0:
        tfms.append(Zoom(p=1.0, draw=float(zoom), draw_x=0.5, draw_y=0.5))
    x = TensorImage(img[None].float())
    unit = to_unit_points(torch.as_tensor(point, dtype=torch.float32).reshape(1, 1, 2), (w, h))
    b = (x, TensorPoint(unit, img_size=(w, h)))
    for t in setup_aug_tfms(tfms):
        b = t(b, split_idx=0)
    xi, pi = b
    return xi[0].as_subclass(Tensor), from_unit_points(pi.as_subclass(Tensor).reshape(2), (w, h))


# The graded challenge of the augmentation explorer: a point in a 640x480 grid image and one fixed augmentation,
# drawn for each student (see challenge_for), so that a classmate's answer is no answer. The fallback below, and
# every student's draw, make each convention matter: the flip mirrors the column, fastai's positive angle turns
# the picture one particular way, and a zoom pushes points away from the centre.
CHALLENGE: dict = dict(point=(470.0, 150.0), flip=True, rotate=20.0, zoom=1.3, warp=0.0)
# How far (px at 640x480) a recorded prediction may be from where fastai puts the point.
CHALLENGE_TOLERANCE = 12.0
CHALLENGE_ID = "landing_point"


def grid_image(size: tuple[int, int] = FRAME_SIZE, cell: int = 80) -> Tensor:
    """A labelled grid ``[3, H, W]`` in 0..1: cells named A1, A2, ... so a flipped or turned copy can be read.

    Drawn with PIL's default font only, so it is the same on every machine.
    """
    from PIL import Image, ImageDraw

    w, h = size
    im = Image.new("RGB", (w, h), (245, 245, 240))
    draw = ImageDraw.Draw(im)
    palette = [(250, 215, 160), (180, 220, 250), (200, 240, 190), (240, 200, 230)]
    for j, y in enumerate(range(0, h, cell)):
        for i, x in enumerate(range(0, w, cell)):
            draw.rectangle([x, y, x + cell, y + cell], fill=palette[(i + 2 * j) % 4], outline=(90, 90, 90))
            draw.text((x + 6, y + 5), f"{'ABCDEFGH'[j]}{i + 1}", fill=(20, 20, 20))
    # An arrow pointing up and right, so mirror images and turns cannot be confused.
    draw.line([(w * 0.12, h * 0.88), (w * 0.12, h * 0.62)], fill=(200, 30, 30), width=6)
    draw.polygon([(w * 0.12 - 14, h * 0.64), (w * 0.12 + 14, h * 0.64), (w * 0.12, h * 0.58)], fill=(200, 30, 30))
    draw.line([(w * 0.12, h * 0.88), (w * 0.24, h * 0.88)], fill=(30, 30, 200), width=6)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)


def _landing(c: dict) -> tuple[float, float]:
    w, h = FRAME_SIZE
    _, p = augment(torch.zeros(3, h, w), torch.tensor(c["point"]), c["flip"], c["rotate"], c["zoom"], c["warp"])
    return round(float(p[0]), 1), round(float(p[1]), 1)


def challenge_wrong_conventions(c: dict) -> dict[str, dict]:
    """The augmentations a wrong convention would apply instead of ``c``, by what the student would have assumed."""
    return {"no_flip": dict(c, flip=False), "other_turn": dict(c, rotate=-c["rotate"]),
            "zoom_out": dict(c, zoom=1 / c["zoom"]), "no_rotation": dict(c, rotate=0.0),
            "flip_only": dict(c, rotate=0.0, zoom=1.0), "unmoved": dict(c, flip=False, rotate=0.0, zoom=1.0)}


def challenge_for(student: str | None = None) -> dict:
    """The challenge of ``student`` (the one working here by default, :func:`course_lib.common.student_id`).

    Drawn from :func:`course_lib.common.student_seed`: a point on the grid and a flip, a rotation of 15 to 25
    degrees either way and a zoom of 1.2 to 1.4, redrawn until the point stays well inside the frame and every
    wrong convention lands clearly elsewhere (more than twice the tolerance), so each one can be named.
    """
    from course_lib.common import student_id

    return dict(_challenge_of(student_id() if student is None else student))


@lru_cache(maxsize=256)
def _challenge_of(student: str) -> dict:
    from course_lib.common import student_seed

    rng = np.random.default_rng(student_seed(student, CHALLENGE_ID))
    w, h = FRAME_SIZE
    for _ in range(200):
        c = dict(point=(float(rng.integers(100, 541)), float(rng.integers(80, 401))), flip=True,
                 rotate=float(rng.choice([-25.0, -20.0, -15.0, 15.0, 20.0, 25.0])),
                 zoom=float(rng.choice([1.2, 1.3, 1.4])), warp=0.0)
        truth = _landing(c)
        if not (40 <= truth[0] <= w - 40 and 40 <= truth[1] <= h - 40):
            continue
        spots = [_landing(v) for v in challenge_wrong_conventions(c).values()] + [(truth[1], truth[0])]
        if all(math.hypot(a - truth[0], b - truth[1]) > 2 * CHALLENGE_TOLERANCE for a, b in spots):
            return c
    return dict(CHALLENGE)


def challenge_truth(student: str | None = None, **overrides) -> tuple[float, float]:
    """Where fastai moves ``student``'s challenge point (``[col, row]``, px at 640x480); ``overrides`` change the
    augmentation (used to recognise answers made with a wrong convention)."""
    return _landing({**challenge_for(student), **overrides})


# ----------------------------------------------------------------------------- capstone: a head locator

# The capstone trains on the profile's BIWI folder and is graded on people drawn with a secret seed (see
# keypoints_checks.LOCATE_HEADS). `scale`: frames are decoded at 1/scale of 640x480 (JPEG's own reduced decoding,
# almost free); `steps` of `batch_size` frames; `people` x `frames` held-out frames in the grader's set.
# Measured with benchmarks/capstone.py, OMP_NUM_THREADS=1: ci ~3 CPU-s of training, 10-53 px on held-out people
# (a constant: ~110 px); cpu 66-91 CPU-s, 4.2-19.9 px over 13 seeds, up to 30.6 px with two threads (1000 steps
# left a hard person half-learnt: 8-41 px). gpu: not measured.
CAPSTONE_SETTINGS: dict[str, dict] = {
    "ci": dict(scale=16, steps=200, batch_size=32, lr=1e-2, width=32, people=8, frames=4),
    "cpu": dict(scale=8, steps=2000, batch_size=32, lr=1e-2, width=32, people=6, frames=10),
    "gpu": dict(scale=4, steps=3000, batch_size=64, lr=5e-3, width=64, people=8, frames=25),
}

capstone_settings = profile_settings(CAPSTONE_SETTINGS, "the head-locator capstone")


def load_frames(files: Sequence[Path | str], scale: int = 8) -> Tensor:
    """Frames as one float tensor ``[N, 3, 480 // scale, 640 // scale]`` in 0..1, read at reduced size.

    JPEG can decode at 1/2, 1/4 or 1/8 of its size directly (PIL's ``draft``), far faster than decoding the
    whole 640x480 frame and shrinking it; any remaining factor is a PIL resize.
    """
    from PIL import Image

    w, h = FRAME_SIZE[0] // scale, FRAME_SIZE[1] // scale
    out = []
    for f in files:
        with Image.open(f) as im:
            im.draft("RGB", (w, h))
            im = im.convert("RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.BILINEAR)
            out.append(torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1))
    return torch.stack(out).float() / 255 if out else torch.zeros(0, 3, h, w)


def locator_net(width: int = 32) -> torch.nn.Module:
    """A small fully convolutional locator: four conv blocks (stride 4 in all) and a :class:`HeatmapHead`.

    Images ``[B, 3, H, W]`` (normalised) -> points ``[B, 2]`` in ``(-1, 1)``, ``[col, row]``.
    """
    def block(n_in: int, n_out: int, stride: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(n_in, n_out, 3, stride, 1, bias=False),
                                   torch.nn.BatchNorm2d(n_out), torch.nn.ReLU())

    body = torch.nn.Sequential(block(3, width // 2, 2), block(width // 2, width, 1), block(width, width, 2),
                               block(width, width, 1))
    return torch.nn.Sequential(body, HeatmapHead(width, width))


def locate_heads(train_path: Path | str, images: Sequence[Path | str]) -> Tensor:
    """Train a head locator on the BIWI folder ``train_path`` and predict the head centre of every file in ``images``.

    ``train_path`` holds the usual recordings (``01/frame_XXXXX_rgb.jpg`` with its pose file, ``01/rgb.cal``);
    ``images`` are frames of people it never shows, without pose files. Returns a float tensor ``[len(images), 2]``
    of ``[col, row]`` in pixels of the 640x480 frames, in the order of ``images``, on the CPU. Sized by the
    profile's :data:`CAPSTONE_SETTINGS`; trains on the notebook's device.
    """
    from course_lib.common import progress_bar
    from course_lib.config import current

    s = capstone_settings()
    device = current().device
    train_path = Path(train_path)
    files = sorted(train_path.glob("*/frame_*_rgb.jpg"))
    cal = read_cal(train_path / "01" / "rgb.cal")
    x = load_frames(files, s["scale"]).to(device)
    y = to_unit_points(torch.stack([get_ctr(f, cal) for f in files]), FRAME_SIZE).to(device)
    torch.manual_seed(0)
    model = locator_net(s["width"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), s["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, s["lr"], total_steps=max(s["steps"], 1))
    model.train()
    for _ in progress_bar(range(s["steps"]), show=s["steps"] > 500, desc="training the locator"):
        idx = torch.randint(len(x), (s["batch_size"],), device=device)
        xb, yb = x[idx], y[idx].clone()
        # A mirrored frame is another plausible frame, its centre mirrored too; and the held-out people have
        # other skin, hair and rooms, so colours are scaled at random per channel.
        flip = torch.rand(len(idx), device=device) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        yb[:, 0] = torch.where(flip, -yb[:, 0], yb[:, 0])
        xb = xb * (0.6 + 0.8 * torch.rand(len(idx), 3, 1, 1, device=device))
        loss = ((model((xb - 0.5) / 0.25) - yb) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            xb = load_frames(images[i:i + 64], s["scale"]).to(device)
            preds.append(model((xb - 0.5) / 0.25))
    out = torch.cat(preds) if preds else torch.zeros(0, 2, device=device)
    return from_unit_points(out, FRAME_SIZE).cpu()
