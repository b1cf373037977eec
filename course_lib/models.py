"""Model factories that work offline: ImageNet weights when cached, a clear line when not."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn


def cached_weights(arch: str):
    """torchvision's default ImageNet weights enum for ``arch`` if its file is in the torch cache, else None.

    Never downloads: the course must run without internet.
    """
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    fname = Path(weights.url).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / fname
    return weights if path.exists() else None


def resnet(arch: str = "resnet18", pretrained: bool = True, quiet: bool = False) -> nn.Module:
    """A torchvision resnet; ImageNet-pretrained when asked and cached, otherwise randomly initialised."""
    builder = getattr(torchvision.models, arch)
    if not pretrained:
        return builder(weights=None)
    weights = cached_weights(arch)
    if weights is None:
        if not quiet:
            print(f"{arch}: no ImageNet weights in the torch cache ({torch.hub.get_dir()}/checkpoints) and no "
                  "internet to fetch them, so starting from random weights.")
        return builder(weights=None)
    if not quiet:
        print(f"{arch}: using cached ImageNet weights {weights}.")
    return builder(weights=weights)
