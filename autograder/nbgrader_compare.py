"""Plain nbgrader on the same submissions: for the benchmark and for checking totals.

Builds a throw-away nbgrader course (this course's ``nbgrader_config.py`` with another
root), runs ``nbgrader generate_assignment``, ``nbgrader autograde`` (one notebook after
the other, as nbgrader does) and ``nbgrader export``, and returns the exported totals.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from autograder import notebooks

CONFIG = Path(__file__).resolve().parent / "nbgrader_config.py"


def _nbgrader(course: Path, *args: str, env: dict, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "nbgrader"), *args, "--config", str(course / "nbgrader_config.py")]
    proc = subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def course(root: Path, lesson: str, cell_timeout: int = 600) -> Path:
    """A fresh nbgrader course under ``root`` with ``lesson`` generated into its gradebook."""
    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    (root / "solutions").mkdir(parents=True)
    shutil.copytree(notebooks.source_path(lesson).parent, root / "solutions" / lesson,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "checkpoints"))
    (root / "nbgrader_config.py").write_text(
        f"exec(open({str(CONFIG)!r}).read())\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        f"c.CourseDirectory.db_url = 'sqlite:///{root / 'gradebook.db'}'\n"
        f"c.Execute.timeout = {int(cell_timeout)}\n"
        "c.Execute.kernel_name = 'vision-workbook'\n")
    return root


def autograde(root: Path, lesson: str, submissions: dict[str, Path], env: dict | None = None,
              cell_timeout: int = 600, timeout: float = 7200) -> tuple[dict[str, float], float]:
    """Totals per student from ``nbgrader autograde`` + ``nbgrader export``, and autograde's wall time."""
    env = {**os.environ, "COURSE_GRADING": "1", **(env or {})}
    # nbgrader runs `alembic` (its database migrations) from PATH: the venv's bin must be on it.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    root = course(root, lesson, cell_timeout)
    _nbgrader(root, "generate_assignment", lesson, "--force", env=env, timeout=600)
    for student, path in submissions.items():
        dest = root / "submitted" / student / lesson
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / f"{lesson}.ipynb")
    t0 = time.perf_counter()
    # A broken submission makes autograde exit 1 after grading the others, as it should.
    _nbgrader(root, "autograde", lesson, "--force", env=env, timeout=timeout, check=False)
    seconds = time.perf_counter() - t0
    out = root / "export.csv"
    _nbgrader(root, "export", "--to", str(out), env=env, timeout=600)
    totals = {r["student_id"]: float(r["score"]) for r in csv.DictReader(open(out)) if r["assignment"] == lesson}
    return totals, seconds
