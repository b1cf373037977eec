"""The fill-level capstone as the grader runs it: the course's ``train_fill`` on a profile's budget.

For each seed: the CPU seconds of ``train_fill`` alone (the model built, the held-out images predicted and the
checkpoint read back are left out), then the whole observed run judged as the grader judges it: the mean absolute
error on the held-out images, and the band it lands in. Usage:

    python benchmarks/fill_level_capstone.py [--profile ci] [--seeds 1 2 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib import checks
from course_lib import fill_level as fl
from course_lib.config import setup, using_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="ci", choices=("ci", "cpu", "gpu"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    setup(profile=args.profile, quiet=True)
    spec = checks.get_spec("train_fill")
    assert spec.bands is not None and spec.measure is not None, "train_fill is a capstone: bands and a measure"
    measure = spec.measure
    seconds: list[float] = []

    def timed(model, steps, batch_size, size, checkpoint=None):
        t0 = time.process_time()
        try:
            return fl.train_fill(model, steps, batch_size, size, checkpoint=checkpoint)
        finally:
            seconds.append(time.process_time() - t0)

    print(f"{args.profile}: budget {fl.settings(args.profile)['capstone']}, bands {spec.bands.describe(args.profile)}"
          f", torch threads {torch.get_num_threads()}")
    for seed in args.seeds:
        cases = checks.hidden_cases(spec, seed, profile=args.profile)
        with using_profile(args.profile):
            t0 = time.process_time()
            observed = checks.observe_cases(spec, timed, cases, device=checks._device(), raw=True)
            whole = time.process_time() - t0
            verdict = checks.judge_observations(spec, cases, observed, profile=args.profile)
        mae = measure(cases[0], checks.from_portable(observed["observations"][0])) \
            if verdict.fraction != -1.0 or verdict.passed else float("nan")
        print(f"seed {seed}: train_fill {seconds[-1]:.1f} CPU s (judged run {whole:.1f} CPU s), MAE {mae:.4f}, "
              f"{verdict.share:.0%} of the points")


if __name__ == "__main__":
    main()
