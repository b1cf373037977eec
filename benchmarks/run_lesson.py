"""Run one solution notebook top to bottom in a profile and report its wall time and chosen output lines.

    python benchmarks/run_lesson.py 02_transfer_learning --profile cpu --fresh-data --grep "over scratch"

``--fresh-data`` points COURSE_DATA_DIR at an empty temporary folder, so the time includes making the
data (and, for lesson 02, pretraining the backbone) as on a student's first run. The notebook runs on a
copy in a temporary folder; the solution is never modified. Per-cell times show where the time goes.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from nbclient import NotebookClient

    from autograder import notebooks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lesson")
    p.add_argument("--profile", default="cpu", choices=("ci", "cpu", "gpu"))
    p.add_argument("--fresh-data", action="store_true", help="start from an empty data folder")
    p.add_argument("--grep", action="append", default=[], help="print output lines matching this regex")
    p.add_argument("--slowest", type=int, default=5, help="show the N slowest cells")
    args = p.parse_args()

    nb = notebooks.read(notebooks.source_path(args.lesson))
    with tempfile.TemporaryDirectory(prefix=f"run_{args.lesson}_") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(notebooks.source_path(args.lesson).parent, work,
                        ignore=shutil.ignore_patterns("checkpoints", ".ipynb_checkpoints"))
        os.environ["COURSE_PROFILE"] = args.profile
        if args.fresh_data:
            os.environ["COURSE_DATA_DIR"] = str(Path(tmp) / "data")
        client = NotebookClient(nb, timeout=3600, kernel_name="vision-workbook",
                                resources={"metadata": {"path": str(work)}})
        times: list[tuple[float, int, str]] = []
        start = time.perf_counter()
        with client.setup_kernel():
            for i, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                t = time.perf_counter()
                client.execute_cell(cell, i)
                times.append((time.perf_counter() - t, i, cell.source.splitlines()[0][:60] if cell.source else ""))
        total = time.perf_counter() - start
    print(f"{args.lesson}: profile {args.profile}, {'fresh' if args.fresh_data else 'existing'} data, "
          f"{total:.0f} s wall, {os.cpu_count()} cores")
    for dt, i, first in sorted(times, reverse=True)[: args.slowest]:
        print(f"  cell {i:3d} {dt:6.1f} s  {first}")
    patterns = [re.compile(g) for g in args.grep]
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if any(pat.search(line) for pat in patterns):
                    print("  " + line.strip())


if __name__ == "__main__":
    main()
