"""The seed's fill-level recipe against course_lib's, in one process on whatever device is here.

Seed recipe: batch 1, 900 px images made one by one with NumPy and torchvision transforms,
Adam at 1e-5, L1 loss, predictions without eval() (as the seed does). Reference: course_lib's
loop (batches built on the device, Adam 2e-3 with cosine decay, eval() predictions).

Prints, for each, the training time (evaluation excluded) to reach the seed's final error
and to reach an MAE of 0.01, and their ratio. Usage:

    python benchmarks/fill_level.py [--budget 120] [--seed-steps 2000] [--size 64]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torchvision.transforms as tf

from course_lib import fill_level as fl
from course_lib.config import setup


def seed_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed's ReadRandomImage + LoadBatch for batch size 1, rewritten (not copied)."""
    level = np.random.random()
    img = fl.make_fill_image(level, 900)
    to_tensor = tf.Compose([tf.ToPILImage(), tf.Resize((size, size)), tf.ToTensor(),
                            tf.Normalize(fl.IMAGENET_MEAN, fl.IMAGENET_STD)])
    return to_tensor(img)[None], torch.tensor([level], dtype=torch.float32)


def seed_error(model, levels, size, device) -> float:
    """The seed's inference: training mode, one image at a time, no gradients."""
    model.train()
    to_tensor = tf.Compose([tf.ToPILImage(), tf.Resize((size, size)), tf.ToTensor(),
                            tf.Normalize(fl.IMAGENET_MEAN, fl.IMAGENET_STD)])
    errs = []
    with torch.no_grad():
        for lv in levels.tolist():
            x = to_tensor(fl.make_fill_image(lv, 900))[None].to(device)
            errs.append(abs(model(x).item() - lv))
    return float(np.mean(errs))


def run_seed(device, steps, budget, eval_every, val_levels):
    torch.manual_seed(0)
    np.random.seed(0)
    model = fl.build_fill_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    curve, train_s, step = [], 0.0, 0
    while step < steps and train_s < budget:
        t0 = time.perf_counter()
        x, y = seed_batch(900)
        pred = model(x.to(device))
        loss = torch.abs(pred - y.to(device)).mean()  # harmless at batch 1, see lesson 06
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
        step += 1
        if step % eval_every == 0:
            curve.append((step, train_s, seed_error(model, val_levels, 900, device)))
    if not curve or curve[-1][0] != step:
        curve.append((step, train_s, seed_error(model, val_levels, 900, device)))
    return curve


def run_reference(device, size, batch_size, steps, budget, eval_every, val_levels):
    torch.manual_seed(0)
    model = fl.build_fill_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator(device=device).manual_seed(0)
    curve, train_s, step = [], 0.0, 0
    while step < steps and train_s < budget:
        t0 = time.perf_counter()
        levels = torch.rand(batch_size, generator=gen, device=device)
        loss = fl.fill_l1_loss(model(fl.make_fill_batch(levels, size)), levels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
        step += 1
        if step % eval_every == 0:
            curve.append((step, train_s, fl.evaluate(model, val_levels.to(device), size)))
    if not curve or curve[-1][0] != step:
        curve.append((step, train_s, fl.evaluate(model, val_levels.to(device), size)))
    return curve


def time_to(curve, target):
    return next((s for _, s, err in curve if err <= target), math.inf)


def fmt(x):
    return "not reached" if math.isinf(x) else f"{x:7.1f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=None,
                   help="training seconds per recipe (default 120 on CPU, 60 on GPU)")
    p.add_argument("--seed-steps", type=int, default=2000)
    p.add_argument("--size", type=int, default=None, help="reference image size (default: the profile's)")
    p.add_argument("--steps", type=int, default=None, help="reference steps (default: the profile's)")
    p.add_argument("--val", type=int, default=32, help="validation images")
    args = p.parse_args()
    cfg = setup()
    dev = cfg.device
    budget = args.budget or (60.0 if cfg.on_gpu else 120.0)
    st = fl.settings()
    size, steps = args.size or st["size"], args.steps or st["steps"]
    val_levels = torch.rand(args.val, generator=torch.Generator().manual_seed(123))

    print(f"seed recipe: batch 1, 900 px, Adam 1e-5, up to {args.seed_steps} steps or {budget:.0f} s of training")
    seed = run_seed(dev, args.seed_steps, budget, eval_every=50 if cfg.on_gpu else 10, val_levels=val_levels)
    print(f"  {seed[-1][0]} steps in {seed[-1][1]:.1f} s, final MAE {seed[-1][2]:.4f}")
    print(f"reference: batch {st['batch_size']}, {size} px, Adam 2e-3 cosine, {steps} steps or {budget:.0f} s")
    ref = run_reference(dev, size, st["batch_size"], steps, budget, st["eval_every"], val_levels)
    print(f"  {ref[-1][0]} steps in {ref[-1][1]:.1f} s, final MAE {ref[-1][2]:.4f}")

    seed_final = seed[-1][2]
    rows = [("seed's final error", seed_final), ("MAE 0.01", 0.01)]
    print(f"\n{'time to reach':<28}{'seed recipe':>14}{'reference':>14}{'ratio seed/ref':>16}")
    for name, target in rows:
        a, b = time_to(seed, target), time_to(ref, target)
        ratio = "n/a" if math.isinf(a) or math.isinf(b) or b == 0 else f"{a / b:.1f}x"
        print(f"{name + f' ({target:.4f})':<28}{fmt(a):>14}{fmt(b):>14}{ratio:>16}")
    print(f"\ndevice: {dev}; profile {cfg.profile}. Figures are training time only (evaluation excluded).")


if __name__ == "__main__":
    main()
