"""`python -m course_lib.data --profile ci|cpu|gpu|auto`: make every lesson's default data once."""
from __future__ import annotations

import argparse
import importlib
import time

# Each entry: (module, function returning the dataset's path for a profile).
MAKERS = (
    ("course_lib.data.pascal", "get_pascal_2007"),
    ("course_lib.data.biwi", "get_biwi"),
    ("course_lib.data.flowers", "get_flowers"),
    ("course_lib.transfer", "prepare"),  # lesson 02's pretrained backbone, when no ImageNet weights are cached
)


def main() -> None:
    from course_lib.config import data_source, resolve_profile

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--profile", default="auto", help="ci, cpu, gpu, or auto (COURSE_PROFILE, else by hardware)")
    args = p.parse_args()
    profile = resolve_profile(None if args.profile == "auto" else args.profile)
    if data_source() == "real":
        print("COURSE_DATA=real: lessons download their data when first opened; nothing to make here.")
        return
    for module, func in MAKERS:
        try:
            getter = getattr(importlib.import_module(module), func)
        except ModuleNotFoundError:
            continue  # a lesson whose data maker is not part of this checkout yet
        t0 = time.perf_counter()
        path = getter(profile=profile)
        print(f"{module.rsplit('.', 1)[-1]}: {path} ({time.perf_counter() - t0:.1f} s)")
    print(f"default data for profile '{profile}' is ready (lesson 06 makes its images on the fly).")


if __name__ == "__main__":
    main()
