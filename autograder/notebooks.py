"""Reading notebooks and their nbgrader cells: the vocabulary every step shares."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder import LESSONS, SOLUTIONS

TEST_SUFFIX = "_test"


class NotebookError(Exception):
    """A submission that cannot be graded as it is; the message tells the student what to do."""


def lessons() -> list[str]:
    """Every lesson: a folder of ``solutions/`` holding a notebook of the same name."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if (p / f"{p.name}.ipynb").exists())


def source_path(lesson: str) -> Path:
    return SOLUTIONS / lesson / f"{lesson}.ipynb"


def release_path(lesson: str) -> Path:
    return LESSONS / lesson / f"{lesson}.ipynb"


def read(path: Path) -> nbformat.NotebookNode:
    """Read and validate a notebook, turning every way it can be broken into one clear message."""
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise NotebookError(f"{path.name} was not found.") from None
    except Exception as e:
        raise NotebookError(
            f"{path.name} is not a readable notebook ({type(e).__name__}: {str(e)[:200]}). "
            "Open it in JupyterLab; if it does not open, download a fresh copy of the lesson, "
            "paste your answers back in, save and resubmit."
        ) from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        raise NotebookError(f"{path.name} is not a valid notebook: {e.message[:200]}. Re-save it from JupyterLab and resubmit.") from None
    return nb


def meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def grade_id(cell) -> str | None:
    return meta(cell).get("grade_id")


def is_solution(cell) -> bool:
    return bool(meta(cell).get("solution"))


def is_test(cell) -> bool:
    m = meta(cell)
    return bool(m.get("grade")) and not m.get("solution")


@dataclass(frozen=True)
class Exercise:
    id: str
    test_id: str
    points: float


def exercises(source: nbformat.NotebookNode) -> list[Exercise]:
    """The graded exercises of a lesson, in notebook order, from its source notebook."""
    out = []
    for cell in source.cells:
        if is_test(cell):
            gid = grade_id(cell)
            ex = gid[: -len(TEST_SUFFIX)] if gid.endswith(TEST_SUFFIX) else gid
            out.append(Exercise(ex, gid, float(meta(cell).get("points", 0))))
    return out
