"""Model factories that work offline: ImageNet weights when cached, a clear line when not."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from course_lib.common import imagenet_weights_cached


def resnet(arch: str = "resnet18", pretrained: bool = True, quiet: bool = False) -> nn.Module:
    """A torchvision resnet; ImageNet-pretrained when asked and cached, otherwise randomly initialised."""
    builder = getattr(torchvision.models, arch)
    if not pretrained:
        return builder(weights=None)
    if imagenet_weights_cached(arch) is None:
        if not quiet:
            print(f"{arch}: no ImageNet weights in the torch cache ({torch.hub.get_dir()}/checkpoints) and no "
                  "internet to fetch them, so starting from random weights.")
        return builder(weights=None)
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    if not quiet:
        print(f"{arch}: using cached ImageNet weights {weights}.")
    return builder(weights=weights)
