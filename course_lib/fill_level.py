"""Predicting a continuous value from an image: how much of it is filled with white.

Reference implementations for lesson 06_fill_level, plus the fast pieces the lesson uses
once the student has written the slow ones: a batched image maker that builds a whole
batch directly on the device, a training loop with a progress bar and atomic
checkpoints, and prediction with the same preprocessing as training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.common import IMAGENET_MEAN, IMAGENET_STD, profile_settings, progress_bar, save_atomic

# Sizes per profile. `ci` proves the pipeline runs; `cpu` reaches MAE <= 0.02 in minutes. ``capstone``: the budget
# the grader gives a student's ``train_fill`` (steps of batches of images of ``size`` px) and how many held-out
# images it then predicts.
PROFILE_SETTINGS: dict[str, dict] = {
    "ci": dict(size=48, batch_size=16, steps=30, lr=2e-3, val_n=64, eval_every=10,
               capstone=dict(size=16, batch_size=16, steps=80, held_out=512)),
    "cpu": dict(size=64, batch_size=32, steps=400, lr=2e-3, val_n=256, eval_every=25,
                capstone=dict(size=32, batch_size=32, steps=300, held_out=512)),
    "gpu": dict(size=128, batch_size=64, steps=600, lr=2e-3, val_n=512, eval_every=25,
                capstone=dict(size=64, batch_size=64, steps=600, held_out=1024)),
}

settings = profile_settings(PROFILE_SETTINGS, "fill-level training")


# ----------------------------------------------------------------------------- exercises

def make_fill_image(fill_level: float, size: int = 900) -> np.ndarray:
    """A black ``size`` x ``size`` RGB image whose top ``int(fill_level*size)`` rows are white.

    Returns a uint8 array of shape ``[size, size, 3]``.
    """
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[: int(fill_level * size)] = 255
    return img


def to_input(image: np.ndarray, size: int | None = None) -> Tensor:
    """uint8 ``[H,W,3]`` image -> normalized float tensor ``[3,size,size]``.

    Nearest-neighbour resizing keeps the image black and white, as in training.
    """
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    if size is not None and tuple(x.shape[1:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="nearest")[0]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def load_batch(batch_size: int, size: int) -> tuple[Tensor, Tensor]:
    """A random training batch: images ``[B,3,size,size]`` (ImageNet-normalized float32) and levels ``[B]``."""
    levels = torch.from_numpy(np.random.random(batch_size)).float()
    images = torch.stack([to_input(make_fill_image(float(lv), size)) for lv in levels])
    return images, levels


def fill_l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error between predictions ``[B,1]`` (or ``[B]``) and targets ``[B]``; a scalar.

    Flattening first matters: ``[B,1] - [B]`` broadcasts to ``[B,B]``.
    """
    return (pred.reshape(-1) - target.reshape(-1)).abs().mean()


def build_fill_model(pretrained: bool = False) -> nn.Module:
    """A torchvision resnet18 whose ``fc`` gives one number per image: ``[B,3,H,W] -> [B,1]``."""
    from course_lib.models import resnet

    model = resnet("resnet18", pretrained=pretrained)
    model.fc = nn.Linear(model.fc.in_features, 1)
    return model


def predict_fill(model: nn.Module, image: np.ndarray, size: int | None = None) -> float:
    """The fill level the model sees in a uint8 ``[H,W,3]`` image, as a float in [0, 1].

    Uses the training preprocessing, evaluation mode (BatchNorm's running statistics) and no
    gradients; the model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            out = model(to_input(image, size)[None].to(device))
    finally:
        model.train(was_training)
    return float(out.reshape(-1)[0].clamp(0, 1).item())


def train_fill(model: nn.Module, steps: int, batch_size: int, size: int,
               checkpoint: Path | None = None) -> dict[str, list[float]]:
    """Train ``model`` (``[B,3,size,size] -> [B,1]``) in place for ``steps`` steps of ``batch_size`` fresh images.

    Each step: a batch from :func:`load_batch`, the forward pass, :func:`fill_l1_loss`, zeroed gradients,
    backward, an Adam step (cosine-decayed rate). A few times per run, the MAE on a fixed validation set in
    ``eval()`` mode without gradients, and (when ``checkpoint`` is a path) the weights saved there atomically.
    Returns ``{"loss": [one per step], "val_mae": [one per validation]}``.
    """
    device = next(model.parameters()).device
    # fused: one kernel for all 11 million weights; on a CPU the plain loop over tensors costs more than the
    # forward and backward passes of these small images.
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    val_levels = torch.rand(64, generator=torch.Generator().manual_seed(0)).to(device)
    val_images = make_fill_batch(val_levels, size)
    every = max(1, steps // 4)
    history: dict[str, list[float]] = {"loss": [], "val_mae": []}
    for step in progress_bar(range(steps), steps >= 20, "train_fill"):
        model.train()
        images, levels = load_batch(batch_size, size)
        loss = fill_l1_loss(model(images.to(device)), levels.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history["loss"].append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps:
            model.eval()
            with torch.no_grad():
                pred = model(val_images).reshape(-1).clamp(0, 1)
            history["val_mae"].append(float((pred - val_levels).abs().mean()))
            if checkpoint is not None:
                save_atomic({"model": model.state_dict(), "step": step + 1, "history": history}, checkpoint)
    model.eval()
    return history


def same_image_target(student: str) -> tuple[float, int]:
    """The widget exercise's target for ``student``: (a fill level, an image size) drawn from their seed."""
    from course_lib.common import student_seed

    rng = np.random.default_rng(student_seed(student, "same_image_levels"))
    size = int(rng.choice([12, 20, 24, 28, 40, 48, 56, 72, 80, 96]))
    # Kept off the first and last rows, whose steps the slider's ends cut short.
    return round(float(rng.uniform(2 / size, 1 - 2 / size)), 3), size


# ----------------------------------------------------------------------------- fast path

def make_fill_batch(levels: Tensor, size: int) -> Tensor:
    """Normalized images ``[B,3,size,size]`` for levels ``[B]``, built on ``levels.device``.

    Identical to stacking ``to_input(make_fill_image(level, size))`` but without a round trip
    through numpy and the CPU, which is what limits the seed's loader on a GPU.
    """
    rows = torch.arange(size, device=levels.device)
    n_white = (levels.double() * size).long()  # int(level*size): truncation, as in the seed
    white = (rows[None, :] < n_white[:, None]).float()  # [B, size]
    img = white[:, None, :, None].expand(-1, 3, -1, size)
    mean = torch.tensor(IMAGENET_MEAN, device=levels.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=levels.device).view(1, 3, 1, 1)
    return (img - mean) / std


class FillLevelDataset(torch.utils.data.Dataset):
    """``n`` fixed (image, level) pairs: image ``[3,size,size]`` float, level a float32 scalar."""

    def __init__(self, n: int, size: int, seed: int = 0):
        self.size = size
        self.levels = np.random.default_rng(seed).random(n).astype(np.float32)

    def __len__(self) -> int:
        return len(self.levels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        level = float(self.levels[i])
        return to_input(make_fill_image(level, self.size)), torch.tensor(level)


def fill_dataloader(n: int, size: int, batch_size: int, seed: int = 0,
                    shuffle: bool = True) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(FillLevelDataset(n, size, seed), batch_size=batch_size, shuffle=shuffle)


@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_mae: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def plot(self, ax=None):
        """Training loss (smoothed) and validation MAE against step, on one Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        loss = np.asarray(self.train_loss)
        k = max(1, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid") if len(loss) >= k else loss
        ax.plot(self.steps[k - 1 :], smooth, label="training L1 (smoothed)")
        ax.plot(self.val_steps, self.val_mae, "o-", label="validation MAE")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("mean absolute error")
        ax.legend()
        return ax


def evaluate(model: nn.Module, levels: Tensor, size: int, batch_size: int = 128) -> float:
    """Mean absolute error of ``model`` on images of ``levels`` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    errs = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for chunk in levels.to(device).split(batch_size):
            pred = model(make_fill_batch(chunk, size)).reshape(-1).clamp(0, 1)
            errs.append((pred - chunk).abs())
    model.train(was_training)
    return float(torch.cat(errs).mean().item())


def train_fill_model(
    model: nn.Module,
    steps: int,
    batch_size: int,
    size: int,
    lr: float = 2e-3,
    val_n: int = 256,
    eval_every: int = 25,
    checkpoint: Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    loss_fn=fill_l1_loss,
) -> History:
    """Train ``model`` in place with Adam and L1 on fresh random batches; returns the history.

    The learning rate follows a cosine decay to zero: the last steps, at a small rate, are
    what bring the error from a few percent to under one. With ``checkpoint`` set, the model,
    optimizer and history are saved every ``checkpoint_every`` steps (and at the end), and
    ``resume=True`` continues from that file.
    """
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    hist, start = History(), 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        hist, start = state["history"], state["step"]
    gen = torch.Generator(device=device).manual_seed(seed + start)
    val_levels = torch.rand(val_n, generator=torch.Generator().manual_seed(seed + 10_000)).to(device)
    model.train()
    t0 = time.perf_counter() - hist.seconds
    bar = progress_bar(range(start, steps), progress, "training", initial=start, total=steps, leave=True)
    for step in bar:
        levels = torch.rand(batch_size, generator=gen, device=device)
        loss = loss_fn(model(make_fill_batch(levels, size)), levels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hist.steps.append(step + 1)
        hist.train_loss.append(loss.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            hist.val_steps.append(step + 1)
            hist.val_mae.append(evaluate(model, val_levels, size))
            if progress:
                bar.set_postfix(val_mae=f"{hist.val_mae[-1]:.4f}")
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            hist.seconds = time.perf_counter() - t0
            save_atomic(dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                             history=hist, step=step + 1), checkpoint)
    hist.seconds = time.perf_counter() - t0
    return hist
