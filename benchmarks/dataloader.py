"""How long lesson 01_dataloader takes in a profile, and what its throughput cell measures.

Builds the profile's datasets first (timed on their own: that happens once per machine), then
executes a copy of the solution notebook in a fresh kernel and prints the wall time and the
images-per-second lines of section 9. Usage (the target is the cpu profile under 3 minutes):

    OMP_NUM_THREADS=2 python benchmarks/dataloader.py [--profile cpu]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "solutions" / "01_dataloader" / "01_dataloader.ipynb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    args = parser.parse_args()
    os.environ["COURSE_PROFILE"] = args.profile

    from course_lib.data.flowers import get_flowers
    from course_lib.data.pascal import get_pascal_2007

    start = time.perf_counter()
    get_flowers(args.profile)
    get_pascal_2007(args.profile)
    print(f"data for the {args.profile} profile ready in {time.perf_counter() - start:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        nb_path = Path(tmp) / SOURCE.name
        shutil.copy(SOURCE, nb_path)
        nb = nbformat.read(nb_path, as_version=4)
        start = time.perf_counter()
        ExecutePreprocessor(timeout=600, kernel_name="vision-workbook").preprocess(nb, {"metadata": {"path": tmp}})
        wall = time.perf_counter() - start
    print(f"lesson 01_dataloader, {args.profile} profile: {wall:.1f} s wall for the whole notebook")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                for line in out["text"].splitlines():
                    if line.startswith("num_workers="):
                        print("  " + line)


if __name__ == "__main__":
    main()
