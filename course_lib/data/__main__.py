"""`python -m course_lib.data --profile ci|cpu|gpu|auto`: make every lesson's default data once."""
from __future__ import annotations

import argparse
import time
from typing import Callable


def makers() -> list[tuple[str, Callable]]:
    """``(name, function returning the made data's path for a profile)``, for every dataset the lessons use.

    Imported here rather than at the top so that ``--help`` works before the dependencies are installed.
    """
    from course_lib import backbone
    from course_lib.data import biwi, flowers, pascal

    return [
        ("pascal", pascal.get_pascal_2007),
        ("biwi", biwi.get_biwi),
        ("flowers", flowers.get_flowers),
        # Lessons 02 and 03's pretrained resnet18, made only when no ImageNet weights are cached.
        ("backbone", backbone.prepare),
    ]


def main() -> None:
    from course_lib.config import data_source, resolve_profile

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", default="auto", help="ci, cpu, gpu, or auto (COURSE_PROFILE, else by hardware)")
    args = p.parse_args()
    profile = resolve_profile(None if args.profile == "auto" else args.profile)
    if data_source() == "real":
        print("COURSE_DATA=real: lessons download their data when first opened; nothing to make here.")
        return
    try:
        todo = makers()
    except ModuleNotFoundError as e:
        # A module of the course itself that is missing is a bug to see in full, not a dependency to install.
        if (e.name or "").partition(".")[0] == "course_lib":
            raise
        raise SystemExit(f"python -m course_lib.data: the package {e.name!r} is not installed. "
                         "Run `make install` (or `pip install -e .`) first.") from e
    for name, make in todo:
        t0 = time.perf_counter()
        path = make(profile=profile)
        print(f"{name}: {path} ({time.perf_counter() - t0:.1f} s)")
    print(f"default data for profile '{profile}' is ready (lesson 06 makes its images on the fly).")


if __name__ == "__main__":
    main()
