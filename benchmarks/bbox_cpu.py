"""Lesson 05_bbox's cpu-profile target: largest-object accuracy >= 0.9 and mean IoU >= 0.6 in under 4 minutes.

Runs what the notebook's training cells run with the chosen profile's settings (data loading included in
the wall time) and prints the figures. Figures, never pass/fail.

    OMP_NUM_THREADS=2 python benchmarks/bbox_cpu.py [--profile cpu] [--size 64] [--cls-epochs 6] [--box-epochs 8]
"""
from __future__ import annotations

import argparse
import time

import torch

import course_lib
from course_lib import bbox
from course_lib.data.pascal import get_pascal_2007


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--size", type=int)
    p.add_argument("--cls-epochs", type=int)
    p.add_argument("--box-epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--arch")
    args = p.parse_args()
    cfg = course_lib.setup(profile=args.profile)
    s = bbox.settings()
    for k in ("size", "cls_epochs", "box_epochs", "lr", "batch_size", "arch"):
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    print("settings:", s, "threads:", torch.get_num_threads())
    start = time.perf_counter()
    path = get_pascal_2007()
    train = bbox.load_largest(path, "train", s["size"], progress=False)
    valid = bbox.load_largest(path, "valid", s["size"], progress=False)
    t_data = time.perf_counter() - start
    train_dl, valid_dl = bbox.dataloaders(train, valid, s["batch_size"], augment=True, num_workers=s["num_workers"])
    pretrained = s["arch"].startswith("resnet") and bbox.cached_pretrained(s["arch"])
    cls = bbox.make_model("classifier", s["size"], s["arch"], pretrained=pretrained)
    bbox.fit(cls, train_dl, valid_dl, "classifier", s["cls_epochs"], s["lr"], progress=False)
    t_cls = time.perf_counter() - start - t_data
    box = bbox.make_model("box", s["size"], s["arch"], body=cls[0])  # as the notebook: from the classifier's body
    bbox.fit(box, train_dl, valid_dl, "box", s["box_epochs"], s["lr"], progress=False)
    total = time.perf_counter() - start
    r = bbox.report(cls, box, valid)
    print(f"data {t_data:.0f} s, classifier {t_cls:.0f} s, box model {total - t_data - t_cls:.0f} s, "
          f"total {total:.0f} s on {cfg.device}")
    vdl = torch.utils.data.DataLoader(bbox.LargestObjectDataset(valid), batch_size=64)
    right = bbox.predict(cls, vdl).argmax(1) == valid.labels
    ious = bbox.box_ious(bbox.predict(box, vdl), valid.boxes)
    n_obj = torch.tensor(valid.n_objects)
    for k in sorted(set(valid.n_objects)):
        sel = n_obj == k
        print(f"  {k} object(s): {int(sel.sum())} images, accuracy {right[sel].float().mean():.3f}, "
              f"mean IoU {ious[sel].mean():.3f}")
    print(f"{len(train)} training / {r['n_valid']} validation images at {s['size']} px: "
          f"accuracy {r['accuracy']:.3f}, mean IoU {r['mean_iou']:.3f}, L1 {r['l1_px']:.2f} px at {s['size']} px "
          f"({r['l1_px_original']:.1f} px of the original images)")


if __name__ == "__main__":
    main()
