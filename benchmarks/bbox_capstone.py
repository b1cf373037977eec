"""The capstone of lesson 05_bbox (``detect_largest``) in one profile: its score, band and training cost.

Draws the held-out folders as the grader does (``checks.hidden_cases`` with a seed), trains the reference on each
and prints the mean IoU with the right class, the band it earns, and the CPU seconds of ``detect_largest`` alone
(data drawing excluded), next to what a constant model scores. The band edges of ``bbox_checks.DETECT_LARGEST``
come from these runs.

    COURSE_PROFILE=cpu OMP_NUM_THREADS=1 python benchmarks/bbox_capstone.py --seeds 1 2 3
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib import bbox, bbox_checks
from course_lib.checks import get_spec, hidden_cases
from course_lib.config import setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    cfg = setup()
    spec = get_spec("detect_largest")
    for seed in args.seeds:
        torch.manual_seed(seed)
        (case,) = hidden_cases(spec, seed, profile=cfg.profile)
        start = time.process_time()
        got = bbox.detect_largest(case.args[0])
        seconds = time.process_time() - start
        score = spec.measure(case, got)
        share, band = spec.bands.fraction(score, cfg.profile)
        constant = spec.measure(case, bbox_checks._constant(case.args[0]))
        print(f"{cfg.profile} seed {seed}: {case.label}; score {score:.3f} (band {band + 1}, {share:.0%} of the "
              f"points), constant model {constant:.3f}, detect_largest {seconds:.1f} CPU s")


if __name__ == "__main__":
    main()
