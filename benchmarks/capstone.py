"""A lesson's capstone in a profile, as the grader runs it: the reference's score on held-out data, band and cost.

For each seed, draws the hidden cases as the grader does (``checks.hidden_cases``), runs the reference through
``checks.observe_cases`` and judges what came back with ``checks.judge_observations``, then prints the score,
the band and the CPU seconds of the reference's run (``time.process_time``, all threads; drawing the held-out data
is timed apart). A known mistake named ``constant``, when the spec lists one, is scored beside it: the lowest band
is where it belongs. The band edges of every capstone spec come from these runs. Usage:

    OMP_NUM_THREADS=1 python benchmarks/capstone.py locate_heads --profile cpu --seeds 1 2 3 4 5

The first run of a profile also makes its data (and lesson 02's backbone): read the later seeds for time.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from course_lib import checks
from course_lib.config import setup, using_profile


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exercise", help="a capstone's id, e.g. locate_heads, train_fill, detect_largest")
    parser.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    setup(args.profile, quiet=True)
    spec = checks.get_spec(args.exercise)
    if spec.bands is None or spec.measure is None or spec.reference is None:
        parser.error(f"{args.exercise} is not a capstone (no bands, measure or reference)")
    constant = spec.mistake("constant")
    scores = []
    print(f"{args.profile}: {spec.id}, bands {spec.bands.describe(args.profile)}, "
          f"limit {spec.seconds.get(args.profile)} s")
    for seed in args.seeds:
        t0 = time.process_time()
        cases = checks.hidden_cases(spec, seed, profile=args.profile)
        drawn = time.process_time() - t0
        with using_profile(args.profile), contextlib.redirect_stdout(io.StringIO()):
            t0 = time.process_time()
            observed = checks.observe_cases(spec, spec.reference, cases, device=checks._device(), raw=True)
            spent = time.process_time() - t0
        verdict = checks.judge_observations(spec, cases, observed, profile=args.profile)
        score = spec.measure(cases[0], checks.from_portable(observed["observations"][0]))
        scores.append(score)
        _, band = spec.bands.fraction(score, args.profile)
        line = f"seed {seed}: {spec.bands.metric} {score:.4g}, band {band + 1} ({verdict.share:.0%} of the points)"
        if constant is not None:
            with using_profile(args.profile):
                line += f"; a constant scores {spec.measure(cases[0], constant.impl(*cases[0].args)):.4g}"
        print(f"{line}; reference {spent:.1f} CPU s, data drawn in {drawn:.1f} CPU s")
    print(f"{args.profile}: {spec.bands.metric} {min(scores):.4g} to {max(scores):.4g} "
          f"(median {np.median(scores):.4g}) over {len(scores)} seeds")


if __name__ == "__main__":
    main()
