"""A class of four with one submission whose loss never returns, against the same class without it (issue 17).

Grades both classes (a short copy of lesson 06, one worker, the ci profile) and prints both wall times and their
ratio; the goal is at most 1.2. Timings on a shared machine vary: run it on an idle one. It is a benchmark, not a
test, because a timed assertion fails whenever something else runs beside it (measured 1.08 and 1.09 alone, 1.25
beside the rest of the test suite under pytest -n 2).

    python benchmarks/hanging_class.py
"""
from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_grade_cheating as t  # noqa: E402

from autograder import grade, notebooks  # noqa: E402

from grading import write_short_course  # noqa: E402


def short_lesson(base: Path) -> None:
    """SOLUTIONS/LESSONS pointing at the tests' short copy of lesson 06 (as their fixture does)."""
    notebooks.SOLUTIONS, notebooks.LESSONS = write_short_course(base, t.LESSON, t.KEEP)


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="hanging-class-"))
    short_lesson(base / "course")
    classes = {"clean": {"a": t._solution(), "b": t._wrong(), "c": t._blank(), "d": t._solution()},
               "hanging": {"a": t._solution(), "b": t._wrong(), "c": t._blank(),
                           "d": t._set(t._solution(), "fill_l1_loss", t.HANGING_LOSS)}}
    seconds = {}
    for name, students in classes.items():
        subs, out = base / name / "subs", base / name / "out"
        t._write_class(subs, students)
        t0 = time.perf_counter()
        grade.grade_all(subs, out, workers=1, progress=False, opts=copy.deepcopy(t.OPTS))
        seconds[name] = time.perf_counter() - t0
    print(f"clean class {seconds['clean']:.1f} s, with a hanging submission {seconds['hanging']:.1f} s, "
          f"ratio {seconds['hanging'] / seconds['clean']:.2f} (goal: at most 1.2)")


if __name__ == "__main__":
    main()
