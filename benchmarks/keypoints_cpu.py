"""Lesson 04's cpu target: held-out-person error under 8 px (at 640x480) in under 4 minutes.

Trains exactly what the notebook trains in a profile (course_lib.keypoints' DataBlock and learner,
``fit_one_cycle`` with the profile's settings) and prints the wall time of data loading plus
training, and the mean distance between predicted and true head centres on the held-out person.
Overrides let you try other recipes. Usage:

    OMP_NUM_THREADS=2 python benchmarks/keypoints_cpu.py [--profile cpu] [--epochs N] [--lr LR]
        [--size H W] [--bs B] [--head linear|heatmap] [--max-warp W] [--max-rotate DEG]
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib import keypoints as K
from course_lib.config import setup
from course_lib.data.biwi import get_biwi, summarize


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--bs", type=int)
    parser.add_argument("--size", type=int, nargs=2)
    parser.add_argument("--arch")
    parser.add_argument("--head", choices=("linear", "heatmap"))
    parser.add_argument("--max-warp", type=float)
    parser.add_argument("--max-rotate", type=float)
    parser.add_argument("--max-lighting", type=float)
    parser.add_argument("--hold-out", default=K.VALID_FOLDER, help="the folder whose person is held out")
    parser.add_argument("--backbone", choices=("random", "course"),
                        help="course: start from course_lib's pretrained resnet18")
    parser.add_argument("--fine-tune", action="store_true", help="fine_tune(epochs, lr) instead of fit_one_cycle")
    args = parser.parse_args(argv)
    cfg = setup(profile=args.profile)
    s = K.settings(args.profile)
    for key, val in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.bs), ("arch", args.arch),
                     ("head", args.head), ("max_warp", args.max_warp), ("max_rotate", args.max_rotate),
                     ("max_lighting", args.max_lighting)):
        if val is not None:
            s[key] = val
    if args.size:
        s["size"] = tuple(args.size)
    print(f"threads={torch.get_num_threads()} settings={s}")
    path = get_biwi(args.profile)
    print(summarize(path))
    start = time.perf_counter()
    dls = K.biwi_dataloaders(path, s, device=cfg.device, folder=args.hold_out)
    if args.backbone:
        s["backbone"] = args.backbone
    if args.fine_tune:
        s["fine_tune"] = True
    if s.get("backbone") == "course":
        from course_lib.multilabel import pretrained_arch

        learn = K.make_learner(dls, pretrained_arch(args.profile), pretrained=True, head=s["head"])
    else:
        learn = K.make_learner(dls, s["arch"], head=s["head"])
    if s.get("fine_tune"):
        learn.fine_tune(s["epochs"], s["lr"])
    else:
        learn.fit_one_cycle(s["epochs"], s["lr"])
    wall = time.perf_counter() - start
    preds, targs = learn.get_preds()
    errors = K.pixel_errors(preds, targs)
    # A mean offset close to the mean error says the model is off the same way on every frame of
    # the new person (a generalisation gap), not noisy.
    offset = K.pixel_offsets(preds, targs).mean(dim=0)
    print(f"profile={args.profile}: held-out person ({len(dls.valid_ds)} frames of folder {args.hold_out}): "
          f"mean error {errors.mean():.2f} px, median {errors.median():.2f} px at 640x480, "
          f"mean offset (col, row) ({offset[0]:+.1f}, {offset[1]:+.1f}) px; "
          f"valid MSE {torch.nn.functional.mse_loss(preds.reshape(-1, 2), targs.reshape(-1, 2)).item():.6f}; "
          f"train+load wall time {wall:.0f} s (target: < 8 px in < 240 s)")


if __name__ == "__main__":
    main()
