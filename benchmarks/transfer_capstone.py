"""Lesson 02's capstone in a profile: the reference's top-1 accuracy on held-out flowers, its band, its CPU time.

Draws held-out folders as the grader does (``checks.hidden_cases`` with a seed per run, in the profile's sizes),
runs ``transfer.classify_flowers`` on each and prints the accuracy, the band it earns and the CPU seconds of the
function alone (``time.process_time``, all threads; making the folder is timed apart). The first run also loads or
makes the profile's backbone and flowers: run once before timing, or read the later runs. Usage:

    OMP_NUM_THREADS=2 python benchmarks/transfer_capstone.py [--profile cpu] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from course_lib import checks, transfer
from course_lib.config import setup


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    setup(args.profile, quiet=True)
    transfer.backbone(args.profile, progress=False)  # made or loaded before any timing
    spec = checks.get_spec("classify_flowers")
    assert spec.bands is not None and spec.measure is not None
    accuracies = []
    for seed in args.seeds:
        t0 = time.process_time()
        case = checks.hidden_cases(spec, seed, profile=args.profile)[0]
        made = time.process_time() - t0
        t0 = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            got = transfer.classify_flowers(*case.args)
        spent = time.process_time() - t0
        accuracy = spec.measure(case, got)
        accuracies.append(accuracy)
        fraction, band = spec.bands.fraction(accuracy, args.profile)
        print(f"seed {seed}: accuracy {accuracy:.3f} on {len(case.secret)} photos, band {band + 1} "
              f"({fraction:.0%} of the points); classify_flowers {spent:.1f} CPU s, folder made in {made:.1f} CPU s")
    print(f"{args.profile}: accuracy {min(accuracies):.3f} to {max(accuracies):.3f} (mean {np.mean(accuracies):.3f}); "
          f"bands {spec.bands.describe(args.profile)}; limit {spec.seconds.get(args.profile)} CPU s")


if __name__ == "__main__":
    main()
