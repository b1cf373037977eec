"""One place that decides where and how big the course runs: device, seeds, profile.

Every notebook starts with ``cfg = course_lib.setup()``; everything else in
``course_lib`` reads the same choices through :func:`current`.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

PROFILES = ("ci", "cpu", "gpu")

# What each profile is for, in the words printed to students.
PROFILE_BLURB = {
    "ci": "tiny data and a few steps: checks that everything runs, in seconds",
    "cpu": "laptop-sized runs that finish in a few minutes on a CPU",
    "gpu": "full-sized runs for a CUDA GPU",
}


def resolve_profile(profile: str | None = None, cuda: bool | None = None) -> str:
    """The profile to use: explicit argument, then ``COURSE_PROFILE``, then the hardware."""
    chosen = profile or os.environ.get("COURSE_PROFILE", "").strip().lower() or None
    if chosen is not None:
        if chosen not in PROFILES:
            raise ValueError(
                f"Unknown course profile {chosen!r}: use one of {', '.join(PROFILES)} "
                "(set COURSE_PROFILE or pass profile= to setup())."
            )
        return chosen
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return "gpu" if cuda else "cpu"


def data_root() -> Path:
    """Where generated datasets live: ``COURSE_DATA_DIR`` or ``<repo>/data``."""
    env = os.environ.get("COURSE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


def data_source() -> str:
    """``synthetic`` (default, works offline) or ``real`` (fastai's downloads)."""
    src = os.environ.get("COURSE_DATA", "synthetic").strip().lower()
    if src not in ("synthetic", "real"):
        raise ValueError(f"COURSE_DATA must be 'synthetic' or 'real', not {src!r}.")
    return src


@dataclass
class Config:
    profile: str
    device: "object"  # torch.device; typed loosely so importing config stays cheap
    seed: int
    extra: dict = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return getattr(self.device, "type", "cpu") == "cuda"

    def summary(self) -> str:
        dev = str(self.device)
        if self.on_gpu:
            import torch

            dev = f"cuda ({torch.cuda.get_device_name(self.device)})"
        return (
            f"course_lib: profile={self.profile} ({PROFILE_BLURB[self.profile]}), "
            f"device={dev}, seed={self.seed}, data={data_source()}"
        )


_current: Config | None = None


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(profile: str | None = None, seed: int = 42, device: str | None = None, quiet: bool = False) -> Config:
    """Pick the device, seed every generator, set plotting defaults and the profile.

    Prints one line saying what runs where, so a student never has to guess.
    """
    global _current
    import torch

    if device is None:
        device = os.environ.get("COURSE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    prof = resolve_profile(profile, cuda=dev.type == "cuda")
    seed_everything(seed)
    _matplotlib_defaults()
    _current = Config(profile=prof, device=dev, seed=seed)
    if not quiet:
        print(_current.summary())
    return _current


def current() -> Config:
    """The configuration set by :func:`setup` (set up quietly with defaults if nobody did)."""
    return _current if _current is not None else setup(quiet=True)


@contextlib.contextmanager
def using_profile(profile: str):
    """Within it, :func:`current` reports ``profile`` (the grader sizes a capstone's held-out data by the
    grading run's profile, not by its own machine); the device and seed stay as they were."""
    global _current
    saved = _current
    base = current()
    _current = Config(profile=resolve_profile(profile), device=base.device, seed=base.seed)
    try:
        yield _current
    finally:
        _current = saved


def _matplotlib_defaults() -> None:
    try:
        import matplotlib as mpl
    except ImportError:  # plotting is optional for the grader's own process
        return
    mpl.rcParams.update({"figure.figsize": (6, 4), "figure.dpi": 80, "axes.grid": False, "image.cmap": "gray"})
